"""sllm_ray across three nodes: placement, stores copying from each other, sleepers, node loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cluster_under_test import APP_NAME, BASE_URL, model_body
from support import pool_status, replica_record, replica_states, store_status, wait_for

from sllm_ray.names import checkpoint_key, named_actor, store_name

QUICK = {"autoscaling": {"keep_alive_s": 1, "look_back_period_s": 2}}


@pytest.fixture(scope="module")
def client(admin: httpx.Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", max_retries=0, timeout=300)


def _register(admin: httpx.Client, name: str, model_dir: Path, **settings: object) -> str:
    resp = admin.post("/v1/admin/models", json=model_body(name, model_dir, **{**QUICK, **settings}))
    assert resp.status_code == 201, resp.text
    return resp.json()["config"]["model_source"]


def _ask(client: openai.OpenAI, model: str) -> None:
    reply = client.completions.create(
        model=model, prompt="Once", max_tokens=2, extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == 2


def _nodes() -> list[str]:
    import ray

    return sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])


def _replicas(model: str) -> int:
    return sum(replica_states(model).values())


def _node_with_resource(name: str) -> str:
    import ray

    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and name in n["Resources"]]
    return node


def test_a_model_is_read_from_its_source_once_then_copied_between_stores(
    admin: httpx.Client, tiny_model_dir: Path
) -> None:
    import ray

    source = _register(admin, "copied", tiny_model_dir)
    key = checkpoint_key("copied", source)
    # store_prefetch_nodes=1: one store converts it from the source, the others hold nothing.
    seed = wait_for(
        lambda: [n for n in _nodes() if store_status(n)["origins"].get(key) == "source"],
        120,
        "the first copy",
    )[0]
    others = [n for n in _nodes() if n != seed]
    assert all(key not in store_status(n)["disk"] for n in others)
    # What a replica starting on another node makes its store do: copy from the seed's store.
    for node in others:
        ray.get(named_actor(store_name(APP_NAME, node)).prepare.remote("copied", source))
    for node in others:
        report = store_status(node)
        assert report["origins"][key] in set(_nodes()) - {node}, report  # a peer, not the source
        assert report["disk"][key] == store_status(seed)["disk"][key]
        assert key in report["dram"]["checkpoints"]
        assert report["bandwidth"]["network"] > 0
    assert admin.delete("/v1/admin/models/copied").status_code == 200


def test_the_replica_lands_on_the_node_holding_the_model_in_dram(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    import ray

    source = _register(admin, "placed", tiny_model_dir)
    key = checkpoint_key("placed", source)
    (seed,) = wait_for(
        lambda: [n for n in _nodes() if key in store_status(n)["dram"]["checkpoints"]], 120, "a copy"
    )
    # Move the DRAM copy to another node: the seed keeps it on disk only, a third has none.
    target = max(n for n in _nodes() if n != seed)
    ray.get(named_actor(store_name(APP_NAME, seed)).forget.remote("placed", source))
    ray.get(named_actor(store_name(APP_NAME, target)).prepare.remote("placed", source))

    def placement() -> dict[str, Any]:
        return admin.get("/v1/admin/models/placed").json()["placement"]

    # The manager reads the stores' reports every few seconds.
    wait_for(lambda: placement()["estimates"][0]["node_id"] == target, 30, "placement to see the DRAM copy")
    wait_for(lambda: placement()["preferred_node"] == target, 30, "placement to prefer the DRAM copy's node")
    tiers = {e["node_id"]: e["tier"] for e in placement()["estimates"]}
    assert tiers == {
        target: "dram",
        seed: "disk",
        **{n: "remote" for n in _nodes() if n not in (seed, target)},
    }
    _ask(client, "placed")
    record = replica_record("placed")
    assert record["node_id"] == target and record["host"]["load"]["tier"] == "dram"
    wait_for(lambda: _replicas("placed") == 0, 60, "placed to scale to zero")
    assert admin.delete("/v1/admin/models/placed").status_code == 200


def test_the_sleeper_limit_evicts_the_least_recently_used(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    on_a = {"resources": {"custom": {"node_a": 0.1}}}  # both on node a, whose limit is 1
    node_a = _node_with_resource("node_a")
    for name in ("first", "second"):
        _register(admin, name, tiny_model_dir, **on_a)
    evictions = pool_status(node_a)["evictions"]

    def asleep() -> list[str]:
        return [s["model"] for s in pool_status(node_a)["sleeping"]]

    _ask(client, "first")
    wait_for(lambda: asleep() == ["first"], 90, "first asleep on node a")
    _ask(client, "second")
    wait_for(lambda: asleep() == ["second"], 90, "second asleep, first evicted")
    assert pool_status(node_a)["evictions"] == evictions + 1
    # first was evicted: its next start builds an engine again; second's wakes.
    _ask(client, "first")
    assert replica_record("first")["host"]["wakes"] == 0
    wait_for(lambda: asleep() == ["first"], 90, "first asleep again, second evicted")
    for name in ("first", "second"):
        assert admin.delete(f"/v1/admin/models/{name}").status_code == 200


def test_a_node_removed_while_idle_keeps_registered_models(
    cluster: Any, admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    _register(admin, "survivor", tiny_model_dir)
    _ask(client, "survivor")
    wait_for(lambda: _replicas("survivor") == 0, 60, "survivor to scale to zero")
    node_b = _node_with_resource("node_b")
    (worker,) = [w for w in cluster.worker_nodes if w.node_id == node_b]
    cluster.remove_node(worker)
    wait_for(lambda: len(admin.get("/status").json()["nodes"]) == 2, 60, "the manager to drop node b")
    assert [m["model"] for m in admin.get("/v1/admin/models").json()["data"]] == ["survivor"]
    _ask(client, "survivor")
    assert replica_record("survivor")["node_id"] != node_b
