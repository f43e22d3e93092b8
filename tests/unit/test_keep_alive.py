"""Adaptive keep-alive windows on synthetic arrivals, and the sleepers' eviction order."""

from __future__ import annotations

import itertools
import random

from sllm_ray.control.keep_alive import BUDGET_FACTOR, BUDGETED, FIXED, HISTOGRAM, IdleHistogram, Windows
from sllm_ray.engine.sleepers import Sleepers


def observed(times: list[float]) -> IdleHistogram:
    histogram = IdleHistogram()
    for at in times:
        histogram.observe(at)
    return histogram


def test_a_periodic_model_is_unloaded_and_prewarmed_just_before_its_next_request() -> None:
    # Every 10 minutes: idle times all in the bin [600, 660).
    windows = observed([600.0 * i for i in range(30)]).windows(300.0)
    assert windows == Windows(prewarm_s=600 * 0.9, keep_alive_s=660 * 1.1 - 600 * 0.9, source=HISTOGRAM)
    # The next request (600 s later) falls inside the loaded window.
    assert windows.prewarm_s < 600 < windows.prewarm_s + windows.keep_alive_s


def test_too_few_idle_times_fall_back_to_the_fixed_keep_alive() -> None:
    assert observed([600.0 * i for i in range(5)]).windows(300.0) == Windows(0.0, 300.0, FIXED)


def test_random_arrivals_spread_flat_fall_back_to_the_fixed_keep_alive() -> None:
    rng = random.Random(1)
    at, times = 0.0, []
    for _ in range(2000):  # idle times uniform over the whole 4-hour range: a flat histogram
        at += rng.uniform(0, 4 * 3600)
        times.append(at)
    assert observed(times).windows(300.0).source == FIXED


def test_idle_times_beyond_the_range_fall_back_to_the_fixed_keep_alive() -> None:
    assert observed([5 * 3600.0 * i for i in range(30)]).windows(120.0) == Windows(0.0, 120.0, FIXED)


def test_frequent_poisson_arrivals_stay_loaded_from_the_request_on() -> None:
    rng = random.Random(2)
    at, times = 0.0, []
    for _ in range(500):
        at += rng.expovariate(1 / 30)  # mean 30 s: most idle times in the first bin
        times.append(at)
    windows = observed(times).windows(300.0)
    assert windows.source == HISTOGRAM and windows.prewarm_s == 0.0
    # Up to the bin holding the 99th percentile (about 138 s for a 30 s mean), plus 10 %.
    assert 120 * 1.1 <= windows.keep_alive_s <= 240 * 1.1


def test_a_bursty_model_gets_the_fewest_cold_starts_its_budget_affords() -> None:
    # Each burst: 10 requests 10 s apart, 10 more 6 minutes apart, then 2 or 3 hours idle.
    # The paper's tail (the 99th percentile) would keep the replica for hours each time;
    # the fixed 300 s keep-alive misses every 6-minute gap.
    times, at = [], 0.0
    for burst in range(40):
        for gap in [10.0] * 10 + [360.0] * 10:
            at += gap
            times.append(at)
        at += 2 * 3600.0 if burst % 2 else 3 * 3600.0
    windows = observed(times).windows(300.0)
    assert windows.source == BUDGETED and windows.prewarm_s == 0.0
    assert 360.0 < windows.keep_alive_s < 2 * 3600.0  # the 6-minute gaps warm, the hours not
    idle = [b - a for a, b in itertools.pairwise(times)]
    held = sum(min(t, windows.keep_alive_s) for t in idle)
    assert held <= BUDGET_FACTOR * sum(min(t, 300.0) for t in idle)


def test_sleepers_evict_the_least_recently_used_and_wake_the_newest_of_a_fingerprint() -> None:
    sleepers: Sleepers[str, str] = Sleepers(2)
    assert sleepers.add("h1", "a", "host-1") == []
    assert sleepers.add("h2", "b", "host-2") == []
    assert sleepers.add("h3", "a", "host-3") == ["host-1"]
    assert list(sleepers) == ["host-2", "host-3"] and sleepers.fingerprints() == {"a", "b"}
    assert sleepers.take("a") == "host-3"
    assert sleepers.take("a") is None
    sleepers.pop("h2")
    assert len(sleepers) == 0
