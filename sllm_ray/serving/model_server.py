"""The per-model deployment ``model:<name>``: one replica runs one vLLM engine.

vLLM is imported inside the replica, not at module import, so the ingress and the Serve
controller (which import this module to build the app) never pay for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve import Application

from sllm_ray.config import ModelConfig
from sllm_ray.protocol import Accepted, Endpoint, ResponseHead

logger = logging.getLogger(__name__)


class ModelServer:
    """Serve replica body for one model."""

    async def __init__(self, model: str, model_source: str, engine_kwargs: dict[str, Any]) -> None:
        from sllm_ray.engine.openai_engine import OpenAIEngine

        self._replica = serve.get_replica_context().replica_id.unique_id
        self._engine = OpenAIEngine(model, model_source, engine_kwargs)
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


def build_model_deployment(config: ModelConfig) -> Application:
    """The model's Serve deployment, starting at ``min_replicas`` (zero by default).

    Its version is the engine fingerprint: redeploying with other autoscaling or limits
    updates the running replicas in place; other engine arguments, source or resources
    replace them.
    """
    deployment = serve.deployment(ModelServer).options(
        name=config.deployment_name,
        version=config.engine_fingerprint(),
        autoscaling_config=config.autoscaling.to_serve(),
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests or -1,
        ray_actor_options=config.resources.to_ray_actor_options(),
        # The engine build is the slow part of a replica's start; Serve's default
        # health-check period would otherwise probe a half-built engine.
        health_check_period_s=10,
        health_check_timeout_s=30,
        # Bounds how long in-flight requests may finish when a model is deleted.
        graceful_shutdown_timeout_s=30,
        _internal=True,  # Serve only takes an explicit version from internal callers
    )
    return deployment.bind(config.model, config.model_source, config.engine_kwargs)
