"""The engine starts a node's pool passes on to the model manager.

A replica whose first engine is ready tells its node's pool, through the actor handle it
claimed its host with, and the manager follows each pool with one long call at a time
(``NodeServices``). The replica used to call the manager itself, through a Serve handle
of its own: making that handle (its router, its long poll to Serve's controller, the
manager replica's actor handle) took 0.05 of the replica's 0.13 CPU-s in a cold start,
and 0.02 more in Serve's controller and the manager, next to the first token (2-core
machine, every process's CPU measured around a cold start).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque

from sllm_ray.engine.records import EngineStarted, EngineStarts

# Starts kept for a follower that comes late: the manager after its restart, or after
# the pool's.
KEPT = 256


class StartFeed:
    def __init__(self, kept: int = KEPT) -> None:
        self.instance = uuid.uuid4().hex
        self._seq = 0
        self._kept: deque[tuple[int, EngineStarted]] = deque(maxlen=kept)
        self._added = asyncio.Event()

    def add(self, started: EngineStarted) -> None:
        self._seq += 1
        self._kept.append((self._seq, started))
        self._added.set()  # wakes the followers waiting on this event; later ones wait anew
        self._added = asyncio.Event()

    async def since(self, instance: str, seq: int, wait_s: float) -> EngineStarts:
        """The starts after ``seq`` of ``instance``, waiting up to ``wait_s`` for one. A
        follower of another instance (its first call, or this feed is a restarted
        pool's) gets all that are kept."""
        if instance != self.instance:
            seq = 0
        elif self._seq <= seq:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._added.wait(), wait_s)
        return EngineStarts(self.instance, self._seq, tuple(s for n, s in self._kept if n > seq))
