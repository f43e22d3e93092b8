"""vLLM's engine core in this process, driven from asyncio.

vLLM 0.32's ``AsyncLLM`` always starts its engine core in a new process, and that
process starts the model worker in another; each imports torch and vLLM again (about
8 s apiece on a 2-core machine). An engine host has imported them already, so here the
engine core is vLLM's own in-process client (``InprocClient``, what ``LLMEngine`` uses),
with the model worker in-process too (``distributed_executor_backend="uni"``), stepped
on a worker thread: no process is spawned on the cold path. ``AsyncLLM`` and vLLM's
OpenAI serving layer on top are vLLM's own.

Only ``AsyncLLM``'s request path is served (add, abort, outputs, supported tasks,
health, cache resets, sleep, LoRA adapters, collective calls); the multi-process features it would
otherwise reach for (data parallel, elastic expert parallel, fault tolerance) are not
available in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sllm_ray.engine import vllm_compat as vc

logger = logging.getLogger(__name__)


@dataclass
class _Resources:
    """What ``AsyncLLM.errored`` reads from its client."""

    engine_dead: bool = False


class InprocAsyncEngineCore(vc.EngineCoreClient):
    """The async engine-core client ``AsyncLLM`` expects, over vLLM's ``InprocClient``.

    Engine steps run on a worker thread so the event loop keeps streaming; every call that
    touches the scheduler holds one lock, so a request is never added mid-step.
    """

    def __init__(self, vllm_config: Any, executor_class: type, log_stats: bool) -> None:
        self._core = vc.InprocClient(vllm_config, executor_class, log_stats)
        self.resources = _Resources()
        self.engine_ranks_managed = [0]
        self._lock = asyncio.Lock()
        self._work = asyncio.Event()

    async def get_output_async(self) -> Any:
        while True:
            self._work.clear()  # before the check, so a request added after it wakes us
            async with self._lock:
                if vc.has_unfinished_requests(self._core):
                    try:
                        return await asyncio.to_thread(self._core.get_output)
                    except Exception as exc:
                        self.resources.engine_dead = True
                        raise vc.EngineDeadError() from exc
            await self._work.wait()

    async def add_request_async(self, request: Any) -> None:
        async with self._lock:
            self._core.add_request(request)
        self._work.set()

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        async with self._lock:
            self._core.abort_requests(request_ids)

    async def get_supported_tasks_async(self) -> tuple[str, ...]:
        return self._core.get_supported_tasks()

    async def reset_mm_cache_async(self) -> None:
        self._core.reset_mm_cache()

    async def reset_prefix_cache_async(
        self, reset_running_requests: bool = False, reset_connector: bool = False
    ) -> bool:
        async with self._lock:
            return self._core.reset_prefix_cache(reset_running_requests, reset_connector)

    async def is_sleeping_async(self) -> bool:
        return self._core.is_sleeping()

    async def sleep_async(self, level: int = 1, mode: str = "abort") -> None:
        async with self._lock:
            self._core.sleep(level, mode)

    async def wake_up_async(self, tags: list[str] | None = None) -> None:
        async with self._lock:
            self._core.wake_up(tags)

    async def add_lora_async(self, lora_request: Any) -> bool:
        # Reads the adapter's files: on the worker thread, between steps.
        async with self._lock:
            return await asyncio.to_thread(self._core.add_lora, lora_request)

    async def remove_lora_async(self, lora_id: int) -> bool:
        async with self._lock:
            return self._core.remove_lora(lora_id)

    async def list_loras_async(self) -> set[int]:
        async with self._lock:
            return self._core.list_loras()

    async def pin_lora_async(self, lora_id: int) -> bool:
        async with self._lock:
            return self._core.pin_lora(lora_id)

    async def collective_rpc_async(
        self,
        method: str | Callable[..., Any],
        timeout: float | None = None,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> list[Any]:
        async with self._lock:
            return self._core.collective_rpc(method, timeout, args, kwargs)

    def dp_engines_running(self) -> bool:
        return False

    def shutdown(self, timeout: float | None = None) -> None:
        self._core.shutdown()


@contextlib.contextmanager
def inproc_engine_core() -> Iterator[None]:
    """While active, ``AsyncLLM`` builds an ``InprocAsyncEngineCore`` instead of spawning
    its engine-core process."""
    with vc.async_client_factory(InprocAsyncEngineCore):
        yield
