"""sllm_ray's metrics, read back through Ray's Prometheus export, and /status, after a
scripted sequence: a cold start, warm requests, errors, an eviction."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import openai
import pytest
from app_under_test import model_body
from support import wait_for

MODEL = "metered"
SAMPLE = re.compile(r"^(ray_sllm_\w+)\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in httpx.get(url, timeout=10).text.splitlines():
        if match := SAMPLE.match(line):
            name, labels, value = match.groups()
            samples.append((name, dict(LABEL.findall(labels)), float(value)))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """Summed over the processes that report the series (each has its own WorkerId)."""
    return sum(v for n, found, v in samples if n == name and labels.items() <= found.items())


@pytest.fixture(scope="module")
def sequence(admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path) -> None:
    settings = {"autoscaling": {"keep_alive_s": 600}, "keep_asleep": False}
    assert (
        admin.post("/v1/admin/models", json=model_body(MODEL, tiny_model_dir, **settings)).status_code == 201
    )
    wait_for(
        lambda: admin.get(f"/v1/admin/models/{MODEL}").json()["checkpoint"]["tiers"],
        120,
        "the model in a store",
    )
    exact = {"ignore_eos": True}
    client.completions.create(model=MODEL, prompt="Once", max_tokens=3, extra_body=exact)  # cold
    for _ in range(2):
        client.completions.create(model=MODEL, prompt="Once", max_tokens=3, extra_body=exact)
    stream = client.completions.create(
        model=MODEL, prompt="Once", max_tokens=3, stream=True, extra_body=exact
    )
    assert len([c for c in stream if c.choices and c.choices[0].text]) >= 1
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="Once", max_tokens=-1)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="Once", max_tokens=3)


def test_metrics_after_a_cold_start_warm_requests_and_errors(sequence: None, metrics_url: str) -> None:
    def seen() -> list[tuple[str, dict[str, str], float]] | None:
        # Ray exports each process's metrics every few seconds: wait for the last requests'.
        samples = scrape(metrics_url)
        done = (
            total(samples, "ray_sllm_time_to_first_token_seconds_count", model=MODEL, start="warm") == 3
            and total(samples, "ray_sllm_requests_total", model=MODEL, status="400") >= 1
            and total(samples, "ray_sllm_requests_total", model="unknown", status="404") >= 1
            and total(samples, "ray_sllm_running_replicas", model=MODEL)
        )
        return samples if done else None

    try:
        samples = wait_for(seen, 60, "the metrics to be exported")
    except AssertionError:
        ours = [(n, labels, v) for n, labels, v in scrape(metrics_url) if labels.get("model") == MODEL]
        raise AssertionError(f"exported for {MODEL}: {ours}") from None
    assert total(samples, "ray_sllm_requests_total", model=MODEL, status="200") == 4
    assert total(samples, "ray_sllm_requests_total", model=MODEL, status="400") == 1
    assert total(samples, "ray_sllm_requests_total", model="unknown", status="404") >= 1
    ttft = "ray_sllm_time_to_first_token_seconds_count"
    assert total(samples, ttft, model=MODEL, start="cold") == 1
    assert total(samples, "ray_sllm_request_latency_seconds_count", model=MODEL) == 5
    assert total(samples, "ray_sllm_cold_starts_total", model=MODEL, tier="dram") == 1
    for phase in ("host_claimed", "weights_loaded", "engine_ready"):
        assert total(samples, "ray_sllm_cold_start_phase_seconds_count", model=MODEL, phase=phase) == 1
    assert total(samples, "ray_sllm_weights_load_bytes_per_second_count", model=MODEL, tier="dram") == 1
    assert total(samples, "ray_sllm_running_replicas", model=MODEL) == 1
    assert total(samples, "ray_sllm_queued_requests", model=MODEL) == 0
    assert total(samples, "ray_sllm_store_bytes", tier="dram") > 0
    assert any(name == "ray_sllm_sleeping_engines" for name, _, _ in samples)


def test_status_after_the_sequence(sequence: None, admin: httpx.Client) -> None:
    status = admin.get("/status").json()
    (model,) = [m for m in status["models"] if m["model"] == MODEL]
    assert model["replicas"] == {"RUNNING": 1}
    assert set(model["checkpoint"]["tiers"].values()) == {"dram"}
    assert model["placement"]["estimates"]
    (node,) = status["nodes"]
    assert node["engine_hosts"]["claims"] >= 1 and "sleeping" in node["engine_hosts"]
    assert any(key.startswith(f"{MODEL}-") for key in node["store"]["disk"])
    assert node["store"]["bandwidth"]["dram"] > 0


def test_an_eviction_is_counted(sequence: None, admin: httpx.Client, metrics_url: str) -> None:
    before = total(scrape(metrics_url), "ray_sllm_store_evictions_total")
    assert admin.delete(f"/v1/admin/models/{MODEL}").status_code == 200  # leaves the DRAM tier
    wait_for(
        lambda: total(scrape(metrics_url), "ray_sllm_store_evictions_total") > before, 60, "the eviction"
    )
