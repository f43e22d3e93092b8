"""Placement estimates: hot < DRAM < disk < remote, from sizes, bandwidths and queues."""

from __future__ import annotations

import pytest

from sllm_ray.control.placement import (
    BUILD_S,
    DISK,
    DRAM,
    HOT,
    REMOTE,
    WAKE_S,
    NodeState,
    estimate,
    fits,
    rank,
)

GB = 10**9
BW = {"dram": 10 * GB, "disk": 1 * GB, "network": 0.5 * GB}
KEYS = ("m-123", "m-123.vllm-x")


def test_each_tier_is_estimated_from_its_bandwidth() -> None:
    hot = estimate(NodeState("n", sleeping=frozenset({"fp"}), bandwidth=BW), KEYS, "fp", 4 * GB)
    assert (hot.tier, hot.seconds) == (HOT, WAKE_S)
    dram = estimate(NodeState("n", tiers={"m-123.vllm-x": DRAM}, bandwidth=BW), KEYS, "fp", 4 * GB)
    assert (dram.tier, dram.seconds) == (DRAM, pytest.approx(BUILD_S + 0.4))
    disk = estimate(NodeState("n", tiers={"m-123": DISK}, bandwidth=BW), KEYS, "fp", 4 * GB)
    assert (disk.tier, disk.seconds) == (DISK, pytest.approx(BUILD_S + 4))
    remote = estimate(NodeState("n", bandwidth=BW), KEYS, "fp", 4 * GB)
    assert (remote.tier, remote.seconds) == (REMOTE, pytest.approx(BUILD_S + 8))


def test_a_sleeper_of_another_engine_configuration_is_not_hot() -> None:
    node = NodeState("n", tiers={"m-123": DRAM}, sleeping=frozenset({"other"}), bandwidth=BW)
    assert estimate(node, KEYS, "fp", GB).tier == DRAM


def test_the_store_queue_delays_disk_and_remote_but_not_dram() -> None:
    busy = {"queued_bytes": 3 * GB, "bandwidth": BW}
    assert estimate(NodeState("n", tiers={"m-123": DISK}, **busy), KEYS, "fp", GB).seconds == pytest.approx(
        BUILD_S + 3 + 1
    )
    assert estimate(NodeState("n", **busy), KEYS, "fp", GB).seconds == pytest.approx(BUILD_S + 3 + 2)
    assert estimate(NodeState("n", tiers={"m-123": DRAM}, **busy), KEYS, "fp", GB).seconds == pytest.approx(
        BUILD_S + 0.1
    )


def test_ranking_prefers_the_soonest_ready_node() -> None:
    nodes = [
        NodeState("a", bandwidth=BW),
        NodeState("b", tiers={"m-123": DISK}, bandwidth=BW),
        NodeState("c", tiers={"m-123": DRAM}, bandwidth=BW),
        NodeState("d", sleeping=frozenset({"fp"}), bandwidth=BW),
    ]
    assert [e.node_id for e in rank(nodes, KEYS, "fp", GB)] == ["d", "c", "b", "a"]
    # A fast disk behind a long queue loses to a remote copy on an idle node.
    nodes = [
        NodeState("a", bandwidth=BW),
        NodeState("b", tiers={"m-123": DISK}, bandwidth=BW, queued_bytes=10 * GB),
    ]
    assert [e.node_id for e in rank(nodes, KEYS, "fp", GB)] == ["a", "b"]
    # Ties go by node id, so the choice is stable.
    assert [e.node_id for e in rank([NodeState("z"), NodeState("y")], KEYS, "fp", GB)] == ["y", "z"]
    assert rank(nodes, KEYS, "fp", GB)[0].to_json() == {"node_id": "a", "tier": REMOTE, "seconds": 2.3}


def test_a_node_fits_a_replica_only_with_every_resource_free() -> None:
    free = {"CPU": 2.0, "GPU": 1.0, "memory": 8e9, "accel_a100": 1.0}
    assert fits(free, {"num_cpus": 1, "num_gpus": 1})
    assert fits(free, {"num_cpus": 0, "num_gpus": 0, "memory": 4e9, "resources": {"accel_a100": 1}})
    assert not fits(free, {"num_cpus": 3})
    assert not fits(free, {"num_cpus": 1, "num_gpus": 2})
    assert not fits(free, {"num_cpus": 1, "resources": {"node_that_does_not_exist": 1}})
    assert not fits({}, {"num_cpus": 1})
