"""Serve request router of the model deployments: the caller's node first, then two choices.

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

from ray.serve.request_router import FIFOMixin, LocalityMixin, PendingRequest, RequestRouter, RunningReplica

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
) -> list[list[R]]:
    """Ranks of replicas to try, most preferred first (``RequestRouter.choose_replicas``).

    First rank: replicas on ``local_node`` known to have room, least loaded first. A
    replica whose queue length is unknown is not assumed to have room. Last rank: two
    distinct replicas at random (one when there is one)."""
    ranks: list[list[R]] = []
    if local_node is not None:
        roomy = []
        for replica in replicas:
            length = queue_len(replica)
            if replica.node_id == local_node and length is not None and length < replica.max_ongoing_requests:
                roomy.append((length, replica))
        if roomy:
            ranks.append([replica for _, replica in sorted(roomy, key=lambda item: item[0])])
    if replicas:
        ranks.append(rng.sample(list(replicas), min(2, len(replicas))))
    return ranks


class LocalFirstRouter(FIFOMixin, LocalityMixin, RequestRouter):
    """``local_first`` with Serve's view: its node, its cached queue lengths."""

    _rng = random.Random()

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        cache = self.replica_queue_len_cache
        return local_first(
            candidate_replicas,
            router_node_id(self),
            lambda replica: cache.get(replica.replica_id),
            self._rng,
        )
