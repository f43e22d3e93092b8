"""Ray workers started ahead of demand for the model replicas of a node.

Ray starts a worker process for each new actor. For a Serve replica that is a Python
start, ``import ray`` and Serve's replica code: about 2 s on the 2-core machine, 4 to 9 s
while a burst of engines is being built, on the path of every scale from zero. A raylet
can start idle workers ahead of demand (``ray_compat.prestart_workers``), and an actor
created on the node takes one of them when the worker's job and runtime environment are
the actor's. So model replicas run with ``runtime_env``, whose setup hook (``prepare``)
imports the replica code while the worker is still idle, and each node's ``HostPool``
keeps such workers started (``ReplicaWorkers``): at least ``replica_workers_per_node``,
else as many as the node's largest burst of cold starts of the last ten minutes
(``Sizing.workers_target``). It counts them on the
node itself (the worker processes that carry the hook and are idle), so a worker Ray
reclaimed or an actor took is seen, and starts the missing ones only while no cold start
is under way on the node (a worker's start takes a CPU-second or two the cold path would
wait for): from ``CLAIM_QUIET_S`` after the last claim, or after the count saw a worker
taken (an actor being placed, before its claim), so the worker a start took is back
before the next start comes, not beside it. While more than one is left idle, one at a
time and when the node's CPUs are not busy serving, for up to a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import sys
import time

import psutil
import ray
from ray.runtime_env import RuntimeEnv

from sllm_ray import ray_compat
from sllm_ray.names import named_actor, pool_name, store_name
from sllm_ray.store import locate

logger = logging.getLogger(__name__)

PREPARE_HOOK = "sllm_ray.engine.replica_workers.prepare"
# The app whose model replicas a worker is for: its setup hook looks up the app's actors.
OWNER_APP_ENV_VAR = "SLLM_RAY_OWNER_APP"
# Idle workers are kept this long from Ray's idle-worker killing; the pool starts new ones
# before then (a worker Ray reclaims is one the count no longer sees).
KEEP_ALIVE_S = 3600
# No worker starts within this long of a claim: a start's engine build or wake and first
# reply (0.3 to 0.7 s after its claim; each claim of a burst pushes it further). Starts
# 4 s after the claim came back, on the 2-core machine, just as the next start of a model
# cycling every 5 to 6 s (keep-alive 1 s) began, and made hot starts of 0.55 s take 1.4 to
# 1.7 s (``benchmarks/cold_start.py``).
CLAIM_QUIET_S = 1.5
# Nor again within this long of the last request to the raylet: its workers may not show
# as processes yet.
SETTLE_S = 4.0
# Nor while the node's CPUs are busier than this (a fraction, since the last count), for
# up to BUSY_DEFER_S, while more than LOW_IDLE idle workers are left: a start takes a
# CPU-second or two from the engines serving (8 clients on a warm model on 2 cores: 0.78x
# its steady requests/s in the 15 s after another model's cold start, which had the pool
# start a worker).
BUSY_FRACTION = 0.5
BUSY_DEFER_S = 60.0
# With at most this many idle workers left the node starts all the missing ones at once,
# busy or not: two cold starts in a row would otherwise pay Ray's worker start.
LOW_IDLE = 1

# When this process's setup hook ran (None: it is no replica worker), and the modules it
# had loaded by then.
prepared_at: float | None = None
prepared_modules: frozenset[str] = frozenset()

# What a replica's start would otherwise import (py-spy on the replica during a cold
# start, 2-core machine: about half of its CPU time before the engine answered): Serve's
# (``ray_compat``) and ours, with the modules of the actor classes a replica looks up by
# name, the node's engine host pool and checkpoint store (a lookup imports the class's
# module). ``imported_since_prepared`` lists what is still missing.
REPLICA_MODULES = (
    *ray_compat.SERVE_REPLICA_MODULES,
    "sllm_ray.serving.model_server",
    "sllm_ray.engine.host_pool",
    "sllm_ray.store.store_actor",
)

# CPU seconds a worker that is ready uses between two counts at most (Ray's own threads);
# one still starting uses most of a core.
STARTING_CPU_S = 0.1


def runtime_env(owner_app: str) -> dict[str, dict[str, str]]:
    """The runtime environment of the app's model replicas, and so of the workers started
    for them."""
    return {"env_vars": _hook_env_vars(owner_app)}


def _hook_env_vars(owner_app: str) -> dict[str, str]:
    return {ray_compat.WORKER_SETUP_HOOK_ENV_VAR: PREPARE_HOOK, OWNER_APP_ENV_VAR: owner_app}


def prepare() -> None:
    """The setup hook of a replica's worker: before the worker takes its actor, import what a
    model replica runs (about 1 s), read the installed vLLM's version, build the worker's
    serializer (its first use imports pydantic's v1 API), load the classes of the actors a
    replica looks up, and take what is loaded out of the garbage collector's scans: Serve
    runs a full collection as a replica starts, which otherwise walks all of it."""
    global prepared_at, prepared_modules
    for module in REPLICA_MODULES:
        importlib.import_module(module)
    locate.vllm_version()  # a start names its engine's layout (``locate.engine_layout``)
    ray_compat.serialization_context()
    _look_up_replica_actors(os.environ.get(OWNER_APP_ENV_VAR))
    gc.collect()
    gc.freeze()
    prepared_modules = frozenset(sys.modules)
    prepared_at = time.time()


def _look_up_replica_actors(owner_app: str | None) -> None:
    """A process loads an actor's class from the GCS the first time it looks up an actor of
    that class (4.5 ms each on 2 cores, after the imports above). A replica's start looks up
    Serve's controller and its node's engine host pool and checkpoint store: looked up here
    first, the classes are loaded. The handles are not kept: the replica looks the actors
    up again (0.7 ms each), as they may have been replaced since."""
    node_id = ray.get_runtime_context().get_node_id()
    names = [pool_name(owner_app, node_id), store_name(owner_app, node_id)] if owner_app else []
    # ValueError: not started yet; the replica loads the class.
    with contextlib.suppress(ValueError):
        ray_compat.serve_controller()
    for name in names:
        with contextlib.suppress(ValueError):
            named_actor(name)


def imported_since_prepared() -> list[str]:
    """The modules this replica worker loaded after its setup hook: what its start and its
    requests imported on their way (none, when the hook does its job)."""
    return sorted(set(sys.modules) - prepared_modules) if prepared_at is not None else []


def replica_runtime_env(inherited: dict[str, object], owner_app: str) -> str:
    """The serialized runtime environment of the app's replica whose parent runs in
    ``inherited``: Ray merges an actor's own environment variables into its parent's."""
    env_vars = {**dict(inherited.get("env_vars") or {}), **_hook_env_vars(owner_app)}  # type: ignore[call-overload]
    return RuntimeEnv(**{**inherited, "env_vars": env_vars}).serialize()


def own_worker_env() -> tuple[str, str]:
    """From a replica: its job id and serialized runtime environment, which the workers
    started for the next replicas must have."""
    context = ray.get_runtime_context()
    return context.get_job_id(), context.runtime_env.serialize()


def count_idle(cpu_seen: dict[int, float]) -> tuple[int, int]:
    """This node's replica workers that run no actor yet (processes with the setup hook in
    their environment), and how many of them are still starting: Ray's worker start and
    the hook import for seconds, so a worker that used more than ``STARTING_CPU_S`` since
    the last count (``cpu_seen``: pid -> CPU seconds then, updated here) is not ready yet.
    (Several Ray nodes on one machine, as in ``ray.cluster_utils.Cluster``, see each
    other's: an idle worker's title no longer names its raylet.)"""
    idle, starting, seen = 0, 0, {}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        with contextlib.suppress(psutil.Error):
            if not ray_compat.is_idle_worker(process.info["name"], process.info["cmdline"] or []):
                continue
            if process.environ().get(ray_compat.WORKER_SETUP_HOOK_ENV_VAR) != PREPARE_HOOK:
                continue
            times = process.info["cpu_times"]
            seen[process.pid] = times.user + times.system
            idle += 1
            starting += seen[process.pid] - cpu_seen.get(process.pid, 0.0) > STARTING_CPU_S
    cpu_seen.clear()
    cpu_seen.update(seen)
    return idle, starting


def starts_now(missing: int, idle: int) -> int:
    """Workers to start in one go: all that are missing when at most ``LOW_IDLE`` are idle
    (the next cold starts would wait for Ray's worker start), else one, ``SETTLE_S`` apart.
    Three started at once took both cores for seconds, and the hot starts that came
    meanwhile took 1.5 to 2.2 s instead of 0.6 s (``benchmarks/cold_start.py``, 2 cores)."""
    return missing if idle <= LOW_IDLE else min(missing, 1)


class ReplicaWorkers:
    """A node's idle replica workers, kept at the pool's target (``keep``)."""

    def __init__(self, node_id: str, owner_app: str) -> None:
        self._node_id = node_id
        self._owner_app = owner_app
        self._worker_env: tuple[str, str] | None = None  # job id, serialized runtime env
        self._quiet_from = 0.0  # monotonic
        self.idle = 0
        self.starting = 0  # of ``idle``: still importing
        self.started = 0
        self._cpu_seen: dict[int, float] = {}
        self._busy_since: float | None = None  # monotonic: deferring starts since
        psutil.cpu_percent(None)  # the first reading is of nothing: from here on

    def claimed(self, job_id: str, runtime_env: str, now: float) -> None:
        """A replica started on the node, of this job and environment: the workers for the
        next ones get them, once the node is quiet."""
        self._worker_env = (job_id, runtime_env)
        self._quiet_from = max(self._quiet_from, now + CLAIM_QUIET_S)

    def _env(self) -> tuple[str, str] | None:
        if self._worker_env is None and ray.is_initialized():
            # Until a replica tells: the pool's own job and environment, which the manager
            # that started it shares with the Serve controller and so with the replicas.
            context = ray.get_runtime_context()
            self._worker_env = (
                context.get_job_id(),
                replica_runtime_env(dict(context.runtime_env), self._owner_app),
            )
        return self._worker_env

    def _defer(self, busy: float, now: float) -> bool:
        """Whether the missing workers wait for a quieter moment (``BUSY_FRACTION``)."""
        if busy < BUSY_FRACTION or self.idle <= LOW_IDLE:
            self._busy_since = None
            return False
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since < BUSY_DEFER_S:
            return True
        self._busy_since = None
        return False

    async def keep(self, target: int, now: float) -> None:
        env = self._env()
        if env is None:  # outside Ray (the pool's unit tests)
            return
        # Off the event loop: a walk of /proc, which the pool's claims would wait for.
        idle, self.starting = await asyncio.to_thread(count_idle, self._cpu_seen)
        if idle < self.idle:
            # An actor took one: a replica is being placed, a claim follows in a moment.
            # Replacing the worker now started it beside that cold start (in 2 of 3 starts
            # measured, 0.1 s before the replica ran: 0.5 to 0.7 CPU-s on its path).
            self._quiet_from = max(self._quiet_from, now + CLAIM_QUIET_S)
        self.idle = idle
        busy = psutil.cpu_percent(None) / 100
        if now < self._quiet_from:
            return
        missing = target - self.idle
        if missing <= 0:
            return
        if self._defer(busy, now):
            return
        count = starts_now(missing, self.idle)
        self._quiet_from = now + SETTLE_S
        try:
            await ray_compat.prestart_workers(self._node_id, *env, count, KEEP_ALIVE_S)
        except Exception as exc:  # only the next cold starts are slower for it
            logger.warning("could not start replica workers on node %s: %s", self._node_id, exc)
            return
        self.started += count
        logger.info("starting %d replica worker(s) on node %s (%d idle)", count, self._node_id, self.idle)
