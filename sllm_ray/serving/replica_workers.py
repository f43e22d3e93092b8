"""Ray workers started ahead of demand for the model replicas.

Ray starts a worker process for each new actor. For a Serve replica that is a Python
start, ``import ray`` and Serve's replica code: about 2 s on the 2-core machine, on the
path of every scale from zero. A raylet can start idle workers ahead of demand
(``ray_compat.prestart_workers``), and an actor created on the node takes one of them
when the worker's job and runtime environment are the actor's. So model replicas run
with ``RUNTIME_ENV``, whose setup hook (``prepare``) imports the replica code while the
worker is still idle, and such workers are kept started on every node:

- ``replica_workers_per_node`` of them, by the model manager (``Baseline``), started
  again before their keep-alive ends;
- one more after each replica start, by that replica (``replace_own_worker``), for the
  next one: a node keeps as many as its cold starts of the last ``REPLACEMENT_KEEP_S``
  took, and Ray reclaims the idle ones after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Iterable

import ray
from ray.runtime_env import RuntimeEnv

from sllm_ray import ray_compat

logger = logging.getLogger(__name__)

PREPARE_HOOK = "sllm_ray.serving.replica_workers.prepare"
HOOK_ENV_VARS = {ray_compat.WORKER_SETUP_HOOK_ENV_VAR: PREPARE_HOOK}
RUNTIME_ENV = {"env_vars": HOOK_ENV_VARS}
# How long after its start a replica with no request yet starts a worker for its successor
# anyway, and how long that worker stays exempt from idle killing.
REPLACE_AFTER_S = 30.0
REPLACEMENT_KEEP_S = 600
# The baseline workers' keep-alive, and how often the manager starts new ones (before the
# last ones may go: a node briefly has twice the baseline).
BASELINE_KEEP_S = 1800
BASELINE_REFRESH_S = 1500.0

# When this process's setup hook ran (None: it is no replica worker).
prepared_at: float | None = None


def prepare() -> None:
    """The setup hook of a replica's worker: import what a model replica runs (about 1 s)
    before the worker takes its actor."""
    global prepared_at
    importlib.import_module(ray_compat.SERVE_REPLICA_MODULE)
    importlib.import_module("sllm_ray.serving.model_server")
    prepared_at = time.time()


def replica_runtime_env(inherited: dict[str, object]) -> str:
    """The serialized runtime environment of a replica whose parent runs in ``inherited``:
    Ray merges an actor's own environment variables into its parent's."""
    env_vars = {**dict(inherited.get("env_vars") or {}), **HOOK_ENV_VARS}  # type: ignore[call-overload]
    return RuntimeEnv(**{**inherited, "env_vars": env_vars}).serialize()


async def replace_own_worker(first_replies: asyncio.Event) -> None:
    """From a replica that has started: one idle worker on its node, for the next replica,
    once the replica's first replies are out (``first_replies`` set, or after
    ``REPLACE_AFTER_S`` without any): a worker's start takes a CPU-second or two, which
    they would wait for."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(first_replies.wait(), REPLACE_AFTER_S)
    context = ray.get_runtime_context()
    node_id, job_id, env = context.get_node_id(), context.get_job_id(), context.runtime_env.serialize()
    try:
        await ray_compat.prestart_workers(node_id, job_id, env, 1, REPLACEMENT_KEEP_S)
    except Exception as exc:  # only the next cold start is slower for it
        logger.warning("could not start a worker for the next replica: %s", exc)


class Baseline:
    """The model manager's side: ``count`` idle replica workers on each node."""

    def __init__(self, count: int) -> None:
        self._count = count
        context = ray.get_runtime_context()
        # The replicas are the Serve controller's, of the manager's job and environment.
        self._job_id = context.get_job_id()
        self._runtime_env = replica_runtime_env(dict(context.runtime_env))
        self._started: dict[str, float] = {}  # node id -> when its workers were started

    async def keep(self, node_ids: Iterable[str]) -> None:
        if self._count == 0:
            return
        now = time.monotonic()
        for node_id in node_ids:
            if now - self._started.get(node_id, -BASELINE_REFRESH_S) < BASELINE_REFRESH_S:
                continue
            try:
                await ray_compat.prestart_workers(
                    node_id, self._job_id, self._runtime_env, self._count, BASELINE_KEEP_S
                )
            except Exception as exc:
                logger.warning("could not start replica workers on node %s: %s", node_id, exc)
                continue
            self._started[node_id] = now
            logger.info("started %d replica worker(s) on node %s", self._count, node_id)
