"""Readiness: the registry reconciled and every node's engine host pool ready."""

from __future__ import annotations

import pytest

from sllm_ray.api.auth import required_role
from sllm_ray.control.readiness import pool_ready, readiness


@pytest.mark.parametrize(
    ("pool", "ready"),
    [
        ({"ready": True}, True),
        ({"ready": False}, False),
        ({"ready": 1}, False),  # only the pool's own flag counts
        ({"error": "actor died"}, False),
        ({}, False),
    ],
)
def test_pool_ready(pool: dict, ready: bool) -> None:
    assert pool_ready(pool) is ready


def test_not_ready_before_the_pools_are_prepared_and_ready_after() -> None:
    preparing = [
        {"node_id": "n1", "engine_hosts": {"ready": False}},
        {"node_id": "n2", "engine_hosts": {"ready": True}},
    ]
    before = readiness(True, preparing)
    assert before["ready"] is False and before["pools_ready"] == {"n1": False, "n2": True}
    assert before["waiting_for"] == ["the engine host pool on node n1 is not ready"]

    prepared = [{**node, "engine_hosts": {"ready": True}} for node in preparing]
    after = readiness(True, prepared)
    assert after == {
        "ready": True,
        "registry_reconciled": True,
        "pools_ready": {"n1": True, "n2": True},
        "waiting_for": [],
    }


def test_not_ready_while_the_registry_is_being_restored_or_without_nodes() -> None:
    body = readiness(False, [{"node_id": "n1", "engine_hosts": {"ready": True}}])
    assert body["ready"] is False and "deploying the registered models" in body["waiting_for"][0]
    assert readiness(True, [])["waiting_for"] == ["no node has an engine host pool yet"]


def test_probes_need_no_key() -> None:
    assert required_role("/ready") is None and required_role("/health") is None
