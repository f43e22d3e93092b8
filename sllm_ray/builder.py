"""Turn an ``AppConfig`` into a Serve application: the ingress and the model manager.

``configs/serve.yaml`` names ``sllm_ray.builder:build_app`` as its ``import_path`` and
passes the config as ``args``; Python users call ``build_app`` and ``serve.run`` it. The
models themselves run as applications of their own, deployed by the manager from the
registry (seeded with ``args.models``), so they can be added and removed at run time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from sllm_ray.api.ingress import OpenAIIngress
from sllm_ray.config import AppConfig, app_config
from sllm_ray.control.manager import ModelManager
from sllm_ray.names import MANAGER_NAME, ON_HEAD

INGRESS_NAME = "openai-ingress"
# Two ingress replicas where the node has this many CPUs: one that dies is replaced while
# the other takes the new requests. On 2 cores a second one took the engines' CPU: warm
# requests/s during another model's cold start 0.57x to 0.63x of steady with two, 0.83x to
# 0.9x with one, and that cold start 2.3 to 3.1 s against 1.8 to 1.9 s
# (benchmarks/warm_throughput.py, one session).
INGRESS_PAIR_MIN_CPUS = 4


def ingress_replicas(config: AppConfig, cpus: int | None = None) -> int:
    """The ingress deployment's replicas: as configured, else by ``cpus`` (this node's)."""
    if config.ingress_replicas is not None:
        return config.ingress_replicas
    return 2 if (cpus or os.cpu_count() or 1) >= INGRESS_PAIR_MIN_CPUS else 1


def data_dir(config: AppConfig, base: Path) -> Path:
    return (base / Path(config.data_dir).expanduser()).resolve()


def registry_path(config: AppConfig, base: Path) -> Path:
    if config.registry_path:
        return (base / Path(config.registry_path).expanduser()).resolve()
    return data_dir(config, base) / "registry.sqlite"


def build_app(args: AppConfig | dict[str, Any]) -> Application:
    """Serve application builder: validates ``args``, with the ``SLLM_RAY_<FIELD>``
    environment variables over them, and wires the deployments. Serve builds the app of a
    config file in a task on the head node: the variables are those the Ray head started with."""
    config = app_config(args)
    # Relative paths in the config are the builder's working directory's (where
    # `serve run` was started), whatever directory the replicas run in.
    base = Path.cwd()
    manager = serve.deployment(ModelManager).options(
        name=MANAGER_NAME,
        num_replicas=1,
        # On the head node, where the registry file lives across restarts.
        ray_actor_options={"num_cpus": 0, "resources": ON_HEAD},
        max_ongoing_requests=1000,
        # Serve logs every call to a replica at INFO; the ingress polls the manager each
        # second, and admin calls are in the ingress's own access log.
        logging_config={"enable_access_log": False},
    )
    ingress = serve.deployment(OpenAIIngress).options(
        name=INGRESS_NAME,
        num_replicas=ingress_replicas(config),
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1024,
    )
    manager_app = manager.bind(
        config, str(registry_path(config, base)), str(base), str(data_dir(config, base))
    )
    return ingress.bind(config, manager_app)
