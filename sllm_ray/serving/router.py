"""Serve request router of the model deployments: a replica holding the request's adapter
first, then the caller's node, then two choices.

A request for a LoRA adapter carries the adapter as Serve's multiplexed model id; a replica
that loaded it already (it reports its ids to Serve) answers without loading it, so those
with room are tried first, least loaded first.

A model replica forwards every token from its engine host; a replica on the ingress's own
node saves the request and each streamed reply a trip between machines. So replicas on
the caller's node that have free capacity (by Serve's cached queue lengths) are tried
first, least loaded first; when none has room, two replicas picked at random from all
(power of two choices), the less loaded of which Serve then takes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ray.serve.request_router import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    RequestRouter,
    RunningReplica,
)

from sllm_ray.ray_compat import router_node_id


class _Replica(Protocol):
    @property
    def node_id(self) -> str: ...

    @property
    def max_ongoing_requests(self) -> int: ...


R = TypeVar("R", bound=_Replica)


def local_first(
    replicas: Sequence[R],
    local_node: str | None,
    queue_len: Callable[[R], int | None],
    rng: random.Random,
    holds: Callable[[R], bool] | None = None,
) -> list[list[R]]:
    """Ranks of replicas to try, most preferred first (``RequestRouter.choose_replicas``).

    First, when the request is for an adapter: replicas that ``holds`` it, known to have
    room, least loaded first. Then replicas on ``local_node`` known to have room, least
    loaded first. A replica whose queue length is unknown is not assumed to have room. Last
    rank: two distinct replicas at random (one when there is one)."""
    ranks: list[list[R]] = []

    def roomy(keep: Callable[[R], bool]) -> None:
        found = []
        for replica in replicas:
            length = queue_len(replica)
            if keep(replica) and length is not None and length < replica.max_ongoing_requests:
                found.append((length, replica))
        if found:
            ranks.append([replica for _, replica in sorted(found, key=lambda item: item[0])])

    if holds is not None:
        roomy(holds)
    if local_node is not None:
        roomy(lambda replica: replica.node_id == local_node)
    if replicas:
        ranks.append(rng.sample(list(replicas), min(2, len(replicas))))
    return ranks


class LocalFirstRouter(FIFOMixin, LocalityMixin, MultiplexMixin, RequestRouter):
    """``local_first`` with Serve's view: its node, its cached queue lengths, which replicas
    hold which multiplexed ids (adapters)."""

    _rng = random.Random()

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        cache = self.replica_queue_len_cache
        adapter = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        holders = self._multiplexed_model_id_to_replica_ids.get(adapter, set()) if adapter else set()
        return local_first(
            candidate_replicas,
            router_node_id(self),
            lambda replica: cache.get(replica.replica_id),
            self._rng,
            (lambda replica: replica.replica_id in holders) if holders else None,
        )
