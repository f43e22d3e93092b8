"""Per-node pools of engine hosts, kept full ahead of demand, and the sleeping engines.

One ``HostPool`` actor per node (started by the model manager, named after the app and
the node) keeps ``size`` prepared hosts pinned to its node. ``claim`` hands one out at
once and starts a replacement in the background; with none ready it starts one on the
spot, which is the slow path (a vLLM import) and says so in the log.

When a replica goes away its host's engine goes to sleep and the host is ``park``-ed
here (llm-d's fast model actuation): up to ``sleep_limit`` sleeping engines per node,
the least recently used one exiting beyond it. A replica of the same engine claiming a
host on this node gets the sleeping one, which wakes instead of building (a hot start).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import ray

from sllm_ray.engine.host import start_host
from sllm_ray.log_setup import configure_logging

logger = logging.getLogger(__name__)

# After a model is deleted, its replicas' engines may still be on their way to sleep here:
# they are turned away for this long.
FORGET_S = 60.0
# A replacement host waits this long before importing vLLM, so that it does not compete
# for the CPU with the engine build of the host just claimed (the cold path).
REFILL_DELAY_S = 5.0


@dataclass
class _Sleeper:
    host: Any
    fingerprint: str
    model: str
    since: float


class HostPool:
    def __init__(self, app: str, node_id: str, size: int, sleep_limit: int) -> None:
        configure_logging()
        self._app = app
        self._node_id = node_id
        self._size = size
        self._sleep_limit = sleep_limit
        self._ready: list[Any] = []  # hosts whose imports are done
        self._preparing: set[asyncio.Task[None]] = set()
        # Host id -> sleeping engine, least recently used first.
        self._sleeping: OrderedDict[str, _Sleeper] = OrderedDict()
        # Host id -> claimed host. The pool started every host, so it owns them: a host
        # lives while the pool holds a reference, whether its replica still does or not.
        self._claimed: dict[str, Any] = {}
        self._forgotten: dict[str, float] = {}  # deleted model -> when
        self.claims = 0
        self.slow_claims = 0
        self.hot_claims = 0
        self.evictions = 0
        self._refill()

    def _refill(self, delay_s: float = 0.0) -> None:
        missing = self._size - len(self._ready) - len(self._preparing)
        for _ in range(max(missing, 0)):
            task = asyncio.get_event_loop().create_task(self._prepare(delay_s))
            self._preparing.add(task)
            task.add_done_callback(self._preparing.discard)

    async def _prepare(self, delay_s: float = 0.0) -> None:
        await asyncio.sleep(delay_s)
        host = start_host(self._app, self._node_id)
        try:
            await host.__ray_ready__.remote()
        except ray.exceptions.RayActorError:
            logger.exception("engine host failed to start on node %s", self._node_id)
            await asyncio.sleep(5)  # do not spin on a node that cannot start hosts
        else:
            self._ready.append(host)

    def park(self, host: Any, host_id: str, fingerprint: str, model: str) -> bool:
        """Keep a host whose engine went to sleep; False (the host then exits) when no
        sleeper is allowed. Beyond the limit the least recently used sleeper exits."""
        if self._sleep_limit <= 0 or time.monotonic() - self._forgotten.get(model, -FORGET_S) < FORGET_S:
            return False
        host = self._claimed.pop(host_id, host)
        self._sleeping[host_id] = _Sleeper(host, fingerprint, model, time.time())
        while len(self._sleeping) > self._sleep_limit:
            _, evicted = self._sleeping.popitem(last=False)
            self.evictions += 1
            logger.info("sleeping engine of %s exits: more than %d asleep", evicted.model, self._sleep_limit)
            evicted.host.release.remote()
        logger.info("engine of %s asleep on node %s (%d sleeping)", model, self._node_id, len(self._sleeping))
        return True

    def drop(self, host_id: str) -> None:
        """A host is exiting: let go of it."""
        self._claimed.pop(host_id, None)
        self._sleeping.pop(host_id, None)

    def forget(self, model: str) -> None:
        """The model was deleted: its sleeping engines exit, and those still retiring too."""
        self._forgotten[model] = time.monotonic()
        for host_id, sleeper in list(self._sleeping.items()):
            if sleeper.model == model:
                del self._sleeping[host_id]
                sleeper.host.release.remote()

    async def _wake_claim(self, claimer: str, fingerprint: str) -> Any | None:
        for host_id, sleeper in list(self._sleeping.items()):
            if sleeper.fingerprint != fingerprint:
                continue
            del self._sleeping[host_id]
            try:
                await sleeper.host.claim.remote(claimer)
            except ray.exceptions.RayActorError:
                continue
            self._claimed[host_id] = sleeper.host
            self.hot_claims += 1
            return sleeper.host
        return None

    async def claim(self, claimer: str, fingerprint: str | None = None) -> Any:
        """A host for ``claimer`` (a replica id), marked as claimed: the one whose engine
        with ``fingerprint`` is asleep here, else a prepared one."""
        started = time.monotonic()
        self.claims += 1
        if fingerprint is not None and (host := await self._wake_claim(claimer, fingerprint)) is not None:
            return host
        while self._ready:
            host = self._ready.pop(0)
            try:
                self._claimed[await host.claim.remote(claimer)] = host
            except ray.exceptions.RayActorError:
                continue  # died while waiting: try the next
            self._refill(REFILL_DELAY_S)
            return host
        self.slow_claims += 1
        logger.warning(
            "no prepared engine host on node %s: starting one now (slow cold start)", self._node_id
        )
        host = start_host(self._app, self._node_id)
        self._claimed[await host.claim.remote(claimer)] = host
        self._refill()
        logger.info("engine host for %s ready after %.1f s", claimer, time.monotonic() - started)
        return host

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self._node_id,
            "size": self._size,
            "ready": len(self._ready),
            "serving": len(self._claimed),
            "preparing": len(self._preparing),
            "claims": self.claims,
            "slow_claims": self.slow_claims,
            "hot_claims": self.hot_claims,
            "sleep_limit": self._sleep_limit,
            "sleeping": [
                {"model": s.model, "fingerprint": s.fingerprint, "since": s.since}
                for s in self._sleeping.values()
            ],
            "evictions": self.evictions,
        }
