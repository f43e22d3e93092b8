"""A burst: three models at zero replicas, one streaming request each at the same moment.
Each engine host is forked from the node's prepared launcher, so none pays a vLLM import."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import openai
from app_under_test import model_body

NAMES = ("burst-a", "burst-b", "burst-c")
# The benchmark's target is a few seconds (benchmarks/burst.py); this bound leaves CI room.
BOUND_S = 45.0


def _first_token(client: openai.OpenAI, model: str) -> float:
    started = time.monotonic()
    for chunk in client.completions.create(
        model=model, prompt="Once", max_tokens=4, stream=True, extra_body={"ignore_eos": True}
    ):
        if chunk.choices and chunk.choices[0].text:
            return time.monotonic() - started
    raise AssertionError(f"{model} streamed no token")


def test_three_cold_models_at_once_all_answer(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    settings = {"resources": {"num_cpus": 0.25}, "autoscaling": {"keep_alive_s": 2, "look_back_period_s": 2}}
    for name in NAMES:
        registered = admin.post("/v1/admin/models", json=model_body(name, tiny_model_dir, **settings))
        assert registered.status_code == 201, registered.text
    try:
        slow_before = sum(n["engine_hosts"]["slow_claims"] for n in admin.get("/status").json()["nodes"])
        with concurrent.futures.ThreadPoolExecutor(len(NAMES)) as pool:
            ttfts = list(pool.map(lambda m: _first_token(client, m), NAMES))
        assert max(ttfts) < BOUND_S, ttfts
        slow_after = sum(n["engine_hosts"]["slow_claims"] for n in admin.get("/status").json()["nodes"])
        assert slow_after == slow_before  # every host came from a prepared launcher
    finally:
        for name in NAMES:
            admin.delete(f"/v1/admin/models/{name}")
