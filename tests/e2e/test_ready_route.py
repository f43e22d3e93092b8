"""GET /ready: false while a node's engine host pool is being prepared, true after; open
without a key; /status shows each node's pool readiness."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from app_under_test import BASE_URL
from support import app_folders, wait_for

FRESH_APP = "sllm-fresh"


@pytest.fixture
def fresh(serve_app: str, tmp_path: Path, tiny_model_dir: Path) -> Iterator[str]:
    """A second app, just deployed: its pools have only started preparing their hosts."""
    from ray import serve

    from sllm_ray.builder import build_app

    config = {
        **app_folders(tmp_path, tiny_model_dir),
    }
    serve.run(build_app(config), name=FRESH_APP, route_prefix="/fresh")
    try:
        yield f"{BASE_URL}/fresh"
    finally:
        serve.delete(FRESH_APP)


def test_ready_only_once_the_pools_are_prepared(fresh: str) -> None:
    started = time.monotonic()
    before = httpx.get(f"{fresh}/ready", timeout=30)
    assert before.status_code == 503, before.text
    body = before.json()
    assert body["ready"] is False and body["error"]["code"] == 503
    assert any("engine host pool" in reason for reason in body["waiting_for"]), body
    assert "not ready: " in body["error"]["message"]

    def ready() -> dict | None:
        response = httpx.get(f"{fresh}/ready", timeout=30)
        return response.json() if response.status_code == 200 else None

    body = wait_for(ready, 300, "the fresh app ready")
    assert body["ready"] is True and body["registry_reconciled"] is True and body["waiting_for"] == []
    assert body["pools_ready"] and all(body["pools_ready"].values())
    print(f"ready {time.monotonic() - started:.1f} s after the app was deployed")


def test_status_shows_each_nodes_pool_readiness(admin: httpx.Client) -> None:
    wait_for(lambda: admin.get("/ready").status_code == 200, 300, "the suite's app ready")
    nodes = admin.get("/status").json()["nodes"]
    assert nodes and all(node["pool_ready"] is True for node in nodes)
