"""The model deployments' request router: its choices, without Serve."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sllm_ray.serving.router import local_first


@dataclass(frozen=True)
class Replica:
    name: str
    node_id: str
    max_ongoing_requests: int = 4


A1, A2, B1, B2 = Replica("a1", "A"), Replica("a2", "A"), Replica("b1", "B"), Replica("b2", "B")


def ranks(replicas: list[Replica], local: str | None, lengths: dict[str, int | None], seed: int = 0):
    return local_first(replicas, local, lambda r: lengths.get(r.name), random.Random(seed))


def test_local_replicas_with_room_come_first_least_loaded_first() -> None:
    got = ranks([A1, A2, B1, B2], "A", {"a1": 3, "a2": 1, "b1": 0, "b2": 0})
    assert got[0] == [A2, A1]
    assert len(got) == 2 and len(set(got[1])) == 2  # then power of two choices over all


def test_full_or_unknown_local_replicas_fall_back_to_two_choices() -> None:
    for lengths in ({"a1": 4, "a2": 9}, {}):  # full, or never probed
        got = ranks([A1, A2, B1, B2], "A", lengths)
        assert len(got) == 1 and len(set(got[0])) == 2


def test_no_replica_on_the_callers_node() -> None:
    got = ranks([B1, B2], "A", {"b1": 0, "b2": 0})
    assert len(got) == 1 and set(got[0]) == {B1, B2}
    (unknown_node,) = ranks([B1, B2], None, {"b1": 0})  # a caller whose node is unknown
    assert set(unknown_node) == {B1, B2}


def test_two_choices_spread_over_all_replicas() -> None:
    seen = set()
    for seed in range(50):
        (pair,) = ranks([A1, A2, B1, B2], "C", {}, seed)
        assert len(set(pair)) == 2
        seen.update(pair)
    assert seen == {A1, A2, B1, B2}


def test_one_or_no_replica() -> None:
    assert ranks([B1], "A", {}) == [[B1]]
    assert ranks([], "A", {}) == []


def test_replicas_holding_the_requests_adapter_come_first() -> None:
    holders = {"b1"}  # the adapter is loaded on another node's replica only
    got = local_first(
        [A1, A2, B1, B2],
        "A",
        lambda r: {"a1": 0, "a2": 0, "b1": 2, "b2": 0}.get(r.name),
        random.Random(0),
        lambda r: r.name in holders,
    )
    assert got[0] == [B1] and got[1] == [A1, A2]  # then local, then two choices
    lengths = {"a1": 0, "b1": 4}
    full = local_first([A1, B1], "A", lambda r: lengths[r.name], random.Random(0), lambda r: r is B1)
    assert full[0] == [A1]  # a holder without room is not preferred
