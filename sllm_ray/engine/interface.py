"""What an engine host drives: one model's engine, injected by its class.

``AppConfig.engine_cls`` names the class by import path (``module:Class``); each node's
launcher imports it once and calls ``prepare_process`` before forking any host, so the
imports and one-time setup are shared copy-on-write. ``OpenAIEngine`` is vLLM's; the
Serve-level test suite injects ``sllm_ray.testing.fake_engine:FakeEngine``, which streams
deterministic tokens with no vLLM at all, so everything above the engine is tested fast.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from sllm_ray.engine.records import EngineSpec, LoadReport
from sllm_ray.protocol import Endpoint, ResponseHead

DEFAULT_ENGINE = "sllm_ray.engine.openai_engine:OpenAIEngine"


@runtime_checkable
class Engine(Protocol):
    # Seconds of each phase of the last ``start`` (config, engine core, serving layer...).
    phases: dict[str, float]

    @classmethod
    def prepare_process(cls) -> None:
        """Imports and one-time setup, in the launcher before any fork: no threads may be
        left running and no accelerator initialized."""

    @classmethod
    def for_host(cls, spec: EngineSpec) -> Engine:
        """The engine ``spec`` describes, to be built in this process."""

    @classmethod
    def engine_args_problem(cls, engine_kwargs: dict[str, Any]) -> str | None:
        """What is wrong with a model's engine arguments (unknown names, values the engine
        refuses), None when nothing: registration refuses them with it (422)."""

    async def start(self) -> LoadReport | None:
        """Build the engine; how its weights were loaded when they came from the store."""

    def generate(self, endpoint: Endpoint, body: dict) -> AsyncIterator[ResponseHead | str]:
        """A ``ResponseHead`` and, for a stream, SSE events (``sllm_ray.protocol``)."""

    async def load_adapter(self, name: str, source: str) -> None:
        """Serve the LoRA adapter at ``source`` under ``name`` from now on (a name it holds
        from another source: that one replaced); a no-op when it holds it already."""

    async def sleep(self) -> None: ...

    async def wake(self) -> None: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None: ...


def engine_class(path: str) -> type[Engine]:
    """The class at ``module:Class``; ValueError naming what is wrong."""
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"engine_cls {path!r} cannot be imported: {exc}") from exc
    return cls
