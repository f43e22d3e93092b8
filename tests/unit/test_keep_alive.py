"""Adaptive keep-alive windows on synthetic arrivals, and the sleepers' eviction order."""

from __future__ import annotations

import random

from sllm_ray.control.keep_alive import FIXED, HISTOGRAM, IdleHistogram, Windows
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
