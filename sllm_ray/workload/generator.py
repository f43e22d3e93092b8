"""Traces of the public traces' shape, made here from a seed: nothing downloaded.

- Models' popularity is Zipf-distributed (exponent ``ZIPF_S``): a few models take most
  requests, as the Azure Functions 2019 trace's functions do.
- A share of the models (``TIMER_SHARE``, as the trace's timer triggers) fire on a period
  (1 minute to 1 hour), a second of jitter each time.
- The others arrive per minute as Poisson counts whose rate follows a daily rhythm
  (a sine, peak to trough 3:1) times a gamma burst factor per minute (mean 1, shape
  ``BURST_SHAPE``): the per-minute counts are overdispersed, bursty.
- Prompt and output lengths are log-normal around the Azure LLM inference trace 2023's
  medians, with its spread (``traces.MEDIAN_*``).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sllm_ray.workload.traces import MEDIAN_OUTPUT_TOKENS, MEDIAN_PROMPT_TOKENS, Request, Trace

ZIPF_S = 1.1
TIMER_SHARE = 0.3
TIMER_PERIODS_S = (60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
BURST_SHAPE = 0.3
DAY_S = 86400.0
# Log-normal sigmas that give the Azure LLM trace's means from its medians.
PROMPT_SIGMA = 0.5
OUTPUT_SIGMA = 1.0
MAX_PROMPT_TOKENS = 8192
MAX_OUTPUT_TOKENS = 2048


class GeneratorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: int = Field(8, ge=1, le=100_000, description="Models in the trace.")
    duration_s: float = Field(600.0, gt=0, le=30 * DAY_S, description="Trace length.")
    seed: int = 0
    requests_per_model_hour: float = Field(
        6.0, gt=0, description="Mean rate of the non-timer models, before the popularity skew."
    )
    model_prefix: str = "model-"


def _names(config: GeneratorConfig) -> list[str]:
    width = len(str(config.models - 1))
    return [f"{config.model_prefix}{i:0{width}d}" for i in range(config.models)]


def generate(config: GeneratorConfig) -> Trace:
    rng = np.random.default_rng(config.seed)
    names = _names(config)
    timers = rng.random(config.models) < TIMER_SHARE
    # Popularity by rank; the ranks are shuffled so model names say nothing of it.
    weights = 1.0 / np.arange(1, config.models + 1) ** ZIPF_S
    weights = rng.permutation(weights / weights.mean())
    minutes = math.ceil(config.duration_s / 60.0)
    start = np.arange(minutes) * 60.0
    rhythm = 1.0 + 0.5 * np.sin(2 * math.pi * (start + 60.0 * rng.random()) / DAY_S)
    times: list[np.ndarray] = []
    models: list[np.ndarray] = []
    for index in range(config.models):
        if timers[index]:
            period = TIMER_PERIODS_S[rng.integers(len(TIMER_PERIODS_S))]
            at = np.arange(rng.random() * period, config.duration_s, period)
            at = at + rng.uniform(-1.0, 1.0, at.size)
        else:
            rate = config.requests_per_model_hour / 60.0 * weights[index] * rhythm
            bursts = rng.gamma(BURST_SHAPE, 1.0 / BURST_SHAPE, minutes)
            counts = rng.poisson(rate * bursts)
            at = np.repeat(start, counts) + rng.random(int(counts.sum())) * 60.0
        at = at[(at >= 0) & (at < config.duration_s)]
        times.append(at)
        models.append(np.full(at.size, index))
    at = np.concatenate(times)
    which = np.concatenate(models)
    order = np.argsort(at, kind="stable")
    prompts = np.clip(
        rng.lognormal(math.log(MEDIAN_PROMPT_TOKENS), PROMPT_SIGMA, at.size), 1, MAX_PROMPT_TOKENS
    )
    outputs = np.clip(
        rng.lognormal(math.log(MEDIAN_OUTPUT_TOKENS), OUTPUT_SIGMA, at.size), 1, MAX_OUTPUT_TOKENS
    )
    requests = [
        Request(t, names[m], p, o)
        for t, m, p, o in zip(
            at[order].tolist(),
            which[order].tolist(),
            prompts[order].astype(int).tolist(),
            outputs[order].astype(int).tolist(),
            strict=True,
        )
    ]
    return Trace(requests, config.duration_s)
