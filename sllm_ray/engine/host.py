"""Engine hosts: processes forked from their node's launcher, one engine each.

A host is forked ready (vLLM imported and warmed in the launcher, shared copy-on-write),
so the cold path pays neither an import nor a process spawn, only the engine build. It
is not a Ray actor: its node's pool (``host_pool.py``) and the replica that claimed it
drive it through its channel (``channel.py``), with these calls:

- ``start(spec)``: build the engine (``EngineSpec``; weights from the node's store as
  the replica located them); the host then answers generation requests;
- ``sleep`` / ``wake``: the replica went away, the engine waits for the next one;
- ``load_adapter(adapter, source)``: have the engine serve a LoRA adapter under its name;
- ``record``, ``health``; ``exit``: shut the engine down and end the process.

Life of a host (``docs/architecture.md`` has the picture): forked → ready (in the pool)
→ serving (claimed, engine built) → asleep (parked in the pool, least recently used out)
→ serving again (woken: a hot start) ... → exited.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from sllm_ray.engine.build_gate import BuildGate
from sllm_ray.engine.channel import ChannelServer
from sllm_ray.engine.interface import Engine
from sllm_ray.engine.records import EngineSpec, HostRecord


class HostStateError(RuntimeError):
    """A call the host cannot take in its state (a second build, a wake with no engine)."""


logger = logging.getLogger(__name__)


def use_devices(device_ids: tuple[str, ...] | list[str]) -> None:
    """Make the replica's reserved GPUs the only ones this process sees. Must run before
    CUDA is initialized here, which nothing before the engine build does (untested on
    GPUs)."""
    if device_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(device_ids)


class EngineHost:
    """One forked process; at most one engine."""

    def __init__(self, host_id: str, address: str, engine_cls: type[Engine], gate: BuildGate) -> None:
        self._engine_cls = engine_cls
        self._gate = gate
        self._record = HostRecord(host_id=host_id, pid=os.getpid(), forked_at=time.time())
        self._engine: Engine | None = None
        self._starting = False  # a start was asked for: a host builds one engine in its life
        self._keep_asleep = False
        self._server = ChannelServer(address, self._control)
        self.done = asyncio.Event()

    async def _control(self, name: str, args: dict[str, Any]) -> Any:
        if name == "start":
            return await self._start(EngineSpec.from_json(args["spec"]))
        if name == "wake":
            return await self._wake(bool(args.get("keep_asleep", True)))
        if name == "sleep":
            return await self._sleep()
        if name == "load_adapter":
            await self._built().load_adapter(str(args["adapter"]), str(args["source"]))
            return None
        if name == "record":
            return self.record()
        if name == "health":
            await self._built().check_health()
            return None
        if name == "exit":
            self.done.set()
            return None
        raise HostStateError(f"unknown call {name!r}")

    def record(self) -> dict[str, Any]:
        return {**self._record.to_json(), "requests": dict(self._server.stats)}

    def _built(self) -> Engine:
        if self._engine is None:
            raise HostStateError(f"engine host {self._record.host_id} has no engine")
        return self._engine

    async def _start(self, spec: EngineSpec) -> dict[str, Any]:
        if self._starting:
            raise HostStateError(f"engine host {self._record.host_id} already built {self._record.model}")
        self._starting = True
        use_devices(spec.device_ids)
        self._record.model = spec.model
        self._record.fingerprint = spec.fingerprint
        self._record.keep_asleep = spec.keep_asleep
        engine = self._engine_cls.for_host(spec)
        async with self._gate.slot() as waited:
            self._record.engine_started_at = time.time()  # the build itself, after its slot
            try:
                load = await engine.start()
            except Exception as exc:
                # The cause goes back to the replica, which names it to the waiting clients.
                logger.error("engine of %s could not be built: %s: %s", spec.model, type(exc).__name__, exc)
                engine.shutdown()
                raise
        self._engine = engine
        self._record.engine_ready_at = time.time()
        self._record.phases = {"build_slot_wait_s": waited, **engine.phases}
        self._record.load = load
        if load is not None:
            self._record.phases["weights_s"] = load.seconds
        self._server.serve(engine.generate)
        return self.record()

    async def _sleep(self) -> dict[str, Any]:
        await self._built().sleep()
        self._record.asleep_since = time.time()
        return self.record()

    async def _wake(self, keep_asleep: bool) -> dict[str, Any]:
        engine = self._built()
        if self._record.asleep_since is None:
            raise HostStateError(f"engine host {self._record.host_id} is not asleep")
        await engine.wake()
        self._record.asleep_since = None
        self._record.wakes += 1
        self._record.woke_at = time.time()
        self._record.keep_asleep = keep_asleep
        logger.info("woke the sleeping engine of %s", self._record.model)
        return self.record()

    def close(self) -> None:
        self._server.close()
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None


async def serve_host(host_id: str, address: str, engine_cls: type[Engine], gate: BuildGate) -> None:
    """Run a host until it is told to exit (the body of a forked process)."""
    host = EngineHost(host_id, address, engine_cls, gate)
    try:
        await host.done.wait()
        await asyncio.sleep(0.01)  # the reply to ``exit`` leaves first
    finally:
        host.close()
