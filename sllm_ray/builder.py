"""Turn an ``AppConfig`` into a Serve application: one ingress, one deployment per model.

``configs/serve.yaml`` names ``sllm_ray.builder:build_app`` as its ``import_path`` and
passes the config as ``args``; Python users call ``build_app`` and ``serve.run`` it.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from sllm_ray.api.ingress import OpenAIIngress
from sllm_ray.config import AppConfig, ModelConfig
from sllm_ray.serving.model_server import ModelServer

INGRESS_NAME = "openai-ingress"


def build_model_deployment(config: ModelConfig) -> Application:
    """The model's Serve deployment, starting at ``min_replicas`` (zero by default)."""
    deployment = serve.deployment(ModelServer).options(
        name=config.deployment_name,
        autoscaling_config=config.autoscaling.to_serve(),
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options=config.resources.to_ray_actor_options(),
        # The engine build is the slow part of a replica's start; Serve's default
        # health-check period would otherwise probe a half-built engine.
        health_check_period_s=10,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=30,
    )
    return deployment.bind(config, config.resolved_source())


def build_app(args: AppConfig | dict[str, Any]) -> Application:
    """Serve application builder: validates ``args`` and wires the deployments."""
    config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args)
    ingress = serve.deployment(OpenAIIngress).options(
        name=INGRESS_NAME,
        num_replicas=config.ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1024,
    )
    handles = {m.model: build_model_deployment(m) for m in config.models}
    return ingress.bind(config, handles)
