"""Adapter requests above the engine, with the fake engine: a replica loads an adapter before
its request goes in (the fake answers only a model or adapter it holds), on either of two
replicas; the router's preference for the holder is ``tests/unit/test_router.py``'s."""

from __future__ import annotations

from pathlib import Path

import httpx
from fake_app import fake_model
from support import wait_for

from sllm_ray.tools.tiny_lora import make_tiny_lora

BASE = "fake-lora"
REPLICA_HEADER = "x-sllm-replica"


def _ask(admin: httpx.Client, model: str) -> httpx.Response:
    return admin.post("/v1/completions", json={"model": model, "prompt": "Once", "max_tokens": 2})


def test_replicas_load_an_adapter_before_its_request(fake_admin: httpx.Client, tiny_model_dir: Path) -> None:
    sources = {name: make_tiny_lora(tiny_model_dir, tiny_model_dir.parent / name) for name in ("fa", "fb")}
    body = fake_model(
        BASE,
        tiny_model_dir,
        engine_kwargs={"max_model_len": 512, "enable_lora": True},
        autoscaling={"min_replicas": 2, "max_replicas": 2},
        adapters=[{"adapter": name, "source": str(path)} for name, path in sources.items()],
    )
    assert fake_admin.post("/v1/admin/models", json=body).status_code == 201
    try:
        wait_for(lambda: _ask(fake_admin, BASE).status_code == 200, 60, "the base's replicas")
        wait_for(
            lambda: fake_admin.get(f"/v1/admin/models/{BASE}").json()["replicas"].get("RUNNING") == 2,
            60,
            "two replicas",
        )
        first = _ask(fake_admin, "fa")
        # The fake engine answers only what it has loaded: the replica loaded it first.
        assert first.status_code == 200 and first.json()["model"] == "fa", first.text
        # Every replica that gets one of its requests loads it first: none is refused.
        replies = [_ask(fake_admin, name) for name in ("fa", "fb") * 10]
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
        other = _ask(fake_admin, "fb")
        assert other.status_code == 200 and other.json()["model"] == "fb"
    finally:
        fake_admin.delete(f"/v1/admin/models/{BASE}")
