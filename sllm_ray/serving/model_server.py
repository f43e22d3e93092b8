"""The per-model deployment ``model:<name>``: one replica runs one vLLM engine.

vLLM is imported inside the replica, not at module import, so the ingress and the Serve
controller (which import this module to build the app) never pay for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from sllm_ray.config import ModelConfig
from sllm_ray.protocol import Accepted, Endpoint, ResponseHead

logger = logging.getLogger(__name__)


class ModelServer:
    """Serve replica body for one model."""

    async def __init__(self, config: ModelConfig, model_source: str) -> None:
        from sllm_ray.engine.openai_engine import OpenAIEngine

        self._config = config
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._engine = OpenAIEngine(config.model, model_source, config.engine_kwargs)
        await self._engine.start()

    async def generate(
        self, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[Accepted | ResponseHead | str]:
        """Stream a reply as ``sllm_ray.protocol`` describes."""
        yield Accepted(self._replica)
        async for item in self._engine.generate(Endpoint(endpoint), body):
            yield item

    async def check_health(self) -> None:
        await self._engine.check_health()

    def __del__(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown()
