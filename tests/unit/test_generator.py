"""The seeded generator: repeatable, skewed popularity, bursty and periodic arrivals."""

from __future__ import annotations

from collections import Counter

import numpy as np

from sllm_ray.workload.generator import TIMER_PERIODS_S, GeneratorConfig, generate


def test_the_same_seed_gives_the_same_trace_and_another_seed_another() -> None:
    config = GeneratorConfig(models=20, duration_s=3600, seed=3)
    assert generate(config) == generate(config)
    assert generate(config) != generate(config.model_copy(update={"seed": 4}))


def test_popularity_is_heavy_tailed_and_arrivals_are_bursty() -> None:
    trace = generate(GeneratorConfig(models=200, duration_s=86400, seed=7))
    per_model = Counter(r.model for r in trace.requests)
    counts = sorted(per_model.values(), reverse=True)
    # A tenth of the models take most requests.
    assert sum(counts[: len(counts) // 10]) > 0.5 * sum(counts)
    top, _ = per_model.most_common(1)[0]
    minutes = np.bincount([int(r.at // 60) for r in trace.requests if r.model == top], minlength=1440)
    # Poisson counts have a dispersion (variance / mean) of 1; bursts make it far larger.
    assert minutes.var() / minutes.mean() > 3


def test_timer_models_fire_on_a_period_and_lengths_follow_the_llm_trace() -> None:
    trace = generate(GeneratorConfig(models=40, duration_s=4 * 3600, seed=1))
    periodic = 0
    for model in trace.models:
        at = np.array([r.at for r in trace.requests if r.model == model])
        gaps = np.diff(at)
        if at.size > 3 and any(np.all(np.abs(gaps - p) <= 2.0) for p in TIMER_PERIODS_S):
            periodic += 1
    assert 0.15 * 40 <= periodic <= 0.45 * 40
    prompts = np.array([r.prompt_tokens for r in trace.requests])
    outputs = np.array([r.output_tokens for r in trace.requests])
    assert 900 <= np.median(prompts) <= 1150 and 110 <= np.median(outputs) <= 150
    assert all(0 <= r.at < trace.duration_s for r in trace.requests)
