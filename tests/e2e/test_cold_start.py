"""Cold starts through prepared engine hosts and the checkpoint store (records, not timing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from app_under_test import model_body
from support import APP_NAME, replica_record, store_status, wait_for

MODEL = "cold"


def _nodes(admin: httpx.Client) -> list[dict[str, Any]]:
    return admin.get("/status").json()["nodes"]


def _tiers(admin: httpx.Client) -> dict[str, str]:
    return admin.get(f"/v1/admin/models/{MODEL}").json()["checkpoint"]["tiers"]


def _record() -> dict[str, Any]:
    return replica_record(MODEL)


def _ask(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="Once", max_tokens=2, extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == 2


@pytest.fixture(scope="module")
def cold_model(admin: httpx.Client, tiny_model_dir: Path) -> str:
    # Every start a cold one: no engine kept asleep when the model goes back to zero.
    settings = {"autoscaling": {"keep_alive_s": 1, "look_back_period_s": 2}, "keep_asleep": False}
    body = model_body(MODEL, tiny_model_dir, **settings)
    assert admin.post("/v1/admin/models", json=body).status_code == 201
    # Registration converts the model and prefetches it into DRAM on every node.
    wait_for(lambda: set(_tiers(admin).values()) == {"dram"}, 120, "the model in the DRAM tier")
    return MODEL


def test_cold_start_uses_a_prepared_host_and_the_dram_tier(
    admin: httpx.Client, client: openai.OpenAI, cold_model: str, replicas: Callable
) -> None:
    wait_for(
        lambda: all(
            n["engine_hosts"]["ready"] is True and n["engine_hosts"]["free"] >= 1 for n in _nodes(admin)
        ),
        120,
        "a prepared host",
    )
    slow_before = sum(n["engine_hosts"]["slow_claims"] for n in _nodes(admin))
    assert replicas(MODEL) == {}
    # Placement: the one node, where the checkpoint is in DRAM, estimated and preferred.
    (node,) = [n["node_id"] for n in _nodes(admin)]
    placement = admin.get(f"/v1/admin/models/{MODEL}").json()["placement"]
    assert placement["estimates"][0]["node_id"] == node and placement["estimates"][0]["tier"] == "dram"
    wait_for(
        lambda: admin.get(f"/v1/admin/models/{MODEL}").json()["placement"]["preferred_node"] == node,
        30,
        "the replica steered to the node",
    )
    _ask(client)
    record = _record()
    host = record["host"]
    assert host["forked_at"] < record["replica_started_at"]  # forked, prepared, ahead of demand
    assert host["pid"] != record["pid"]  # the replica itself never imported vLLM
    assert record["late_imports"] == [], " ".join(record["late_imports"])  # nor anything on the way
    assert host["model"] == MODEL and host["load"]["tier"] == "dram"
    assert host["engine_started_at"] < host["load"]["finished_at"] < host["engine_ready_at"]
    assert sum(n["engine_hosts"]["slow_claims"] for n in _nodes(admin)) == slow_before


def test_store_restarts_without_failing_requests(
    admin: httpx.Client, client: openai.OpenAI, cold_model: str, replicas: Callable
) -> None:
    import ray

    from sllm_ray.names import named_actor, store_name

    try:
        wait_for(lambda: replicas(MODEL) == {}, 120, "the model to scale to zero")
        (node,) = [n["node_id"] for n in _nodes(admin)]
        before = store_status(node)
        assert before["origins"], before  # this store converted the suite's models from their source
        ray.kill(named_actor(store_name(APP_NAME, node)), no_restart=False)  # Ray restarts it
        _ask(client)  # a cold start while the store is down or just back: it is served
        # A restarted store begins with an empty DRAM tier: the engine loaded from the source
        # (no answer from the store in time, so no load report) or from disk, never from DRAM.
        load = _record()["host"]["load"]
        assert load is None or load["tier"] == "disk", load

        def back() -> dict | None:
            try:
                status = store_status(node)
            except ray.exceptions.ActorUnavailableError:  # still restarting
                return None
            return status if status["disk"] == before["disk"] else None

        # Back, with the disk tier it had; a new instance, which converted nothing itself ...
        after = wait_for(back, 60, "the store to come back")
        assert after["origins"] == {}, after
        # ... and the model prefetched into DRAM again.
        wait_for(lambda: set(_tiers(admin).values()) == {"dram"}, 60, "the model back in DRAM")
    finally:
        admin.delete(f"/v1/admin/models/{MODEL}")
