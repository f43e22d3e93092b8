"""An explicit warm-up (replicas start without a request, hold, then scale to zero), the
adaptive keep-alive's state in ``/status``, and ``sllm-ray replay`` on a tiny generated trace."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from fake_app import BASE_URL, FAST, fake_model
from support import wait_for

from sllm_ray import cli


def _running(admin: httpx.Client, model: str) -> int:
    (described,) = [m for m in admin.get("/status").json()["models"] if m["model"] == model]
    return described["replicas"].get("RUNNING", 0)


def test_a_warm_up_starts_replicas_holds_them_then_scales_to_zero(
    fake_admin: httpx.Client, tiny_model_dir: Path
) -> None:
    body = fake_model("warmup", tiny_model_dir, autoscaling={**FAST, "keep_alive": "adaptive"})
    assert fake_admin.post("/v1/admin/models", json=body).status_code == 201
    assert fake_admin.post("/v1/admin/models/warmup/warm", json={"replicas": 2}).status_code == 422
    assert fake_admin.post("/v1/admin/models/nope/warm", json={}).status_code == 404
    reply = fake_admin.post("/v1/admin/models/warmup/warm", json={"replicas": 1, "for_s": 5})
    assert reply.status_code == 200, reply.text
    held_until = reply.json()["until"]
    wait_for(lambda: _running(fake_admin, "warmup") == 1, 60, "the warm-up's replica")
    described = fake_admin.get("/v1/admin/models/warmup").json()
    assert described["warm_hold"]["replicas"] == 1 and described["warm_hold"]["reason"] == "requested"
    # Too few idle times yet: the fixed keep-alive.
    assert described["keep_alive_windows"] == {"prewarm_s": 0.0, "keep_alive_s": 1.0, "source": "fixed"}
    time.sleep(max(0.0, held_until - time.time() - 2))
    assert _running(fake_admin, "warmup") == 1  # held, with no request at all
    wait_for(lambda: _running(fake_admin, "warmup") == 0, 60, "the replica to go after the hold")
    assert time.time() >= held_until
    assert fake_admin.delete("/v1/admin/models/warmup").status_code == 200


def test_replay_of_a_generated_trace_reports_cold_and_warm_requests(
    fake_app: str, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--url", BASE_URL, "replay", "--generate", "--models", "2", "--duration", "40", "--seed", "1"]
    argv += ["--source", str(tiny_model_dir), "--engine-arg", "max_model_len=512"]
    # 15 requests in 40 s of trace, replayed in 5 s
    argv += ["--requests-per-model-hour", "1200", "--speed", "8", "--keep-alive", "1", "--json"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    overall = result["overall"]
    assert overall["requests"] == result["trace"]["requests"] > 2
    assert overall["errors"] == 0 and overall["status_503"] == 0
    assert overall["ttft_p50_s"] is not None and overall["ttft_p99_s"] >= overall["ttft_p50_s"]
    # Both models start from zero: their first requests wait for a replica.
    assert overall["cold"]["requests"] + overall["hot"]["requests"] >= 2
    assert 0 < overall["cold_start_fraction"] <= 1
    assert overall["replica_seconds"] > 0
    assert set(result["models"]) == {"replay-0", "replay-1"}
    assert sum(m["requests"] for m in result["models"].values()) == overall["requests"]
    for name in result["models"]:  # their engines would otherwise sleep here: the node's limit
        assert httpx.delete(f"{BASE_URL}/v1/admin/models/{name}", timeout=60).status_code == 200
