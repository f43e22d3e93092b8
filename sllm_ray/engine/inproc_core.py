"""vLLM's engine core in this process, driven from asyncio.

vLLM 0.32's ``AsyncLLM`` always starts its engine core in a new process, and that
process starts the model worker in another; each imports torch and vLLM again (about
8 s apiece on a 2-core machine). An engine host has imported them already, so here the
engine core is built in the host's own process, with the model worker in-process too
(``distributed_executor_backend="uni"``), and stepped on a worker thread: no process is
spawned on the cold path. ``AsyncLLM`` and vLLM's OpenAI serving layer on top are
vLLM's own.

Only ``AsyncLLM``'s request path is served (add, abort, outputs, supported tasks,
health, cache resets); the multi-process features it would otherwise reach for (data
parallel, elastic expert parallel, fault tolerance) are not available in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sllm_ray.engine.vllm_compat import EngineCore, EngineCoreClient, EngineCoreOutputs, EngineDeadError

logger = logging.getLogger(__name__)


@dataclass
class _Resources:
    """What ``AsyncLLM.errored`` reads from its client."""

    engine_dead: bool = False


class InprocAsyncEngineCore(EngineCoreClient):
    """An ``EngineCoreClient`` for ``AsyncLLM`` whose engine core lives in this process.

    Engine steps run on a worker thread so the event loop keeps streaming; every call that
    touches the scheduler holds one lock, so a request is never added mid-step.
    """

    def __init__(self, vllm_config: Any, executor_class: type, log_stats: bool) -> None:
        self.engine_core = EngineCore(vllm_config, executor_class, log_stats)
        self.resources = _Resources()
        self.engine_ranks_managed = [0]
        self._lock = asyncio.Lock()
        self._work = asyncio.Event()

    def _step(self) -> EngineCoreOutputs:
        outputs, model_executed = self.engine_core.step_fn()
        self.engine_core.post_step(model_executed=model_executed)
        return (outputs and outputs.get(0)) or EngineCoreOutputs()

    async def get_output_async(self) -> EngineCoreOutputs:
        while True:
            self._work.clear()  # before the check, so a request added after it wakes us
            async with self._lock:
                if self.engine_core.scheduler.has_requests():
                    try:
                        return await asyncio.to_thread(self._step)
                    except Exception as exc:
                        self.resources.engine_dead = True
                        raise EngineDeadError() from exc
            await self._work.wait()

    async def add_request_async(self, request: Any) -> None:
        async with self._lock:
            req, wave = self.engine_core.preprocess_add_request(request)
            self.engine_core.add_request(req, wave)
        self._work.set()

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        if request_ids:
            async with self._lock:
                self.engine_core.abort_requests(request_ids)

    async def get_supported_tasks_async(self) -> tuple[str, ...]:
        return self.engine_core.get_supported_tasks()

    async def reset_mm_cache_async(self) -> None:
        self.engine_core.reset_mm_cache()

    async def reset_prefix_cache_async(
        self, reset_running_requests: bool = False, reset_connector: bool = False
    ) -> bool:
        async with self._lock:
            return self.engine_core.reset_prefix_cache(reset_running_requests, reset_connector)

    async def is_sleeping_async(self) -> bool:
        return self.engine_core.is_sleeping()

    async def sleep_async(self, level: int = 1, mode: str = "abort") -> None:
        async with self._lock:
            self.engine_core.sleep(level, mode)

    async def wake_up_async(self, tags: list[str] | None = None) -> bool:
        async with self._lock:
            return self.engine_core.wake_up(tags)

    def dp_engines_running(self) -> bool:
        return False

    def shutdown(self, timeout: float | None = None) -> None:
        self.engine_core.shutdown()


@contextlib.contextmanager
def inproc_engine_core() -> Iterator[None]:
    """While active, ``AsyncLLM`` builds an ``InprocAsyncEngineCore`` instead of spawning
    its engine-core process (``AsyncLLM.__init__`` calls this factory once)."""
    original = EngineCoreClient.__dict__["make_async_mp_client"]

    def make(vllm_config: Any, executor_class: type, log_stats: bool, **_: Any) -> InprocAsyncEngineCore:
        return InprocAsyncEngineCore(vllm_config, executor_class, log_stats)

    EngineCoreClient.make_async_mp_client = staticmethod(make)  # type: ignore[method-assign]
    try:
        yield
    finally:
        EngineCoreClient.make_async_mp_client = original  # type: ignore[method-assign]
