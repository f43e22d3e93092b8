"""Per-node pools of engine hosts, kept full ahead of demand.

One ``HostPool`` actor per node (started by the model manager, named after the app and
the node) keeps ``size`` prepared hosts pinned to its node. ``claim`` hands one out at
once and starts a replacement in the background; with none ready it starts one on the
spot, which is the slow path (a vLLM import) and says so in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from sllm_ray.engine.host import start_host
from sllm_ray.log_setup import configure_logging

logger = logging.getLogger(__name__)

# A replacement host waits this long before importing vLLM, so that it does not compete
# for the CPU with the engine build of the host just claimed (the cold path).
REFILL_DELAY_S = 5.0


class HostPool:
    def __init__(self, app: str, node_id: str, size: int) -> None:
        configure_logging()
        self._app = app
        self._node_id = node_id
        self._size = size
        self._ready: list[Any] = []  # hosts whose imports are done
        self._preparing: set[asyncio.Task[None]] = set()
        self.claims = 0
        self.slow_claims = 0
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

    async def claim(self, claimer: str) -> Any:
        """A prepared host for ``claimer`` (a replica id), marked as claimed."""
        started = time.monotonic()
        self.claims += 1
        while self._ready:
            host = self._ready.pop(0)
            try:
                await host.claim.remote(claimer)
            except ray.exceptions.RayActorError:
                continue  # died while waiting: try the next
            self._refill(REFILL_DELAY_S)
            return host
        self.slow_claims += 1
        logger.warning(
            "no prepared engine host on node %s: starting one now (slow cold start)", self._node_id
        )
        host = start_host(self._app, self._node_id)
        await host.claim.remote(claimer)
        self._refill()
        logger.info("engine host for %s ready after %.1f s", claimer, time.monotonic() - started)
        return host

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self._node_id,
            "size": self._size,
            "ready": len(self._ready),
            "preparing": len(self._preparing),
            "claims": self.claims,
            "slow_claims": self.slow_claims,
        }
