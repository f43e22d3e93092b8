"""The per-model deployment ``model:<name>``: a thin replica in front of an engine host.

The replica holds the model's resource reservation and nothing heavy: it never imports
vLLM. Its constructor returns at once, so that Serve routes the waiting requests to it
while its engine comes up (Serve marks a replica running only when the constructor
returned, and tells the ingress a little later: done in parallel with the build, that
is about 0.2 s off every cold start). Meanwhile it claims an engine host from its node's
pool (a sleeping engine of the same model if there is one, else a freshly forked host),
asks the node's checkpoint store where the weights are, and has the host build the
engine; the requests wait for it. Then it forwards requests to the host over the host's
local channel (``engine/channel.py``) and streams the replies back. A build that fails
is reported to the model manager, which names the cause to the clients waiting at the
ingress; those waiting here get it too. A request that comes later gets
``ReplicaLeavingError``, which the ingress answers with the cause or sends on to a newer
replica (a PATCH's), until Serve stops this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psutil
import ray
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig
from ray.util import get_current_placement_group

from sllm_ray import metrics, ray_compat
from sllm_ray.config import AdapterConfig, ModelConfig, engine_workers
from sllm_ray.engine import replica_workers
from sllm_ray.engine.channel import ChannelClient, ChannelError
from sllm_ray.engine.records import EngineSpec, EngineStarted, HostLease, HostRecord
from sllm_ray.errors import BadRequestError, EngineLostError, ModelStartFailedError, ReplicaLeavingError
from sllm_ray.log_setup import configure_logging
from sllm_ray.names import MANAGER_NAME, named_actor, pool_name
from sllm_ray.protocol import ACCEPT_WINDOW_S, Accepted, Endpoint, ResponseHead
from sllm_ray.store.locate import (
    DRAM,
    engine_layout,
    locate_adapter,
    locate_checkpoint,
    prepare_checkpoint,
)

logger = logging.getLogger(__name__)

# The requests that reach a new replica before its first reply ended (and at most this long
# after its engine became ready) waited for it: Serve hands a new replica the requests
# queued for it at once, but on a busy machine not always within a second.
COLD_WINDOW_S = 10.0
# A replica on a node that just joined waits this long for the manager to start the
# node's pool (it looks every few seconds).
POOL_WAIT_S = 30.0
# Retry-After of a request whose engine host went away: the replica takes a new host,
# a cold start of about a second.
ENGINE_LOST_RETRY_S = 2
# A replica replaces a dead engine host at most this often in the window; then it fails
# its health check and Serve replaces the whole replica.
MAX_REPLACEMENTS = 3
REPLACEMENT_WINDOW_S = 60.0
HEALTH_CHECK_PERIOD_S = 2.0
GRACEFUL_SHUTDOWN_LOOP_S = 0.2

# Ray's label naming each node by its id.
NODE_ID_LABEL = "ray.io/node-id"
ROUTER_PATH = "sllm_ray.serving.router:LocalFirstRouter"
# LoRA adapters a replica keeps track of as loaded (Serve's multiplexed ids: what its router
# prefers it for), least recently used out. Its engine keeps adapters by vLLM's own bounds
# (``max_loras`` in a batch, ``max_cpu_loras`` in memory) and reloads one as needed.
ADAPTERS_PER_REPLICA = 64


@dataclass
class _LoadedAdapter:
    """An adapter this replica's engine has, from ``source``; ``host_id``: the engine
    host it was loaded into (a host that died took it along)."""

    name: str
    source: str
    host_id: str


class EngineStartError(RuntimeError):
    """A replica could not get its engine: no pool on its node, or the build failed."""


async def _node_pool(owner_app: str, node_id: str) -> Any:
    deadline = time.monotonic() + POOL_WAIT_S
    while True:
        try:
            return named_actor(pool_name(owner_app, node_id))
        except ValueError:
            if time.monotonic() > deadline:
                raise EngineStartError(f"no engine host pool on node {node_id}") from None
            await asyncio.sleep(0.5)


def _record_start(model: str, tier: str, timeline: dict[str, float], host: HostRecord) -> None:
    """A replica start in the metrics: its tier, and its phases from the replica's start."""
    metrics.count("sllm_cold_starts_total", {"model": model, "tier": tier})
    marks = {
        "host_claimed": timeline["host_claimed_at"],
        "weights_loaded": host.load.finished_at if host.load is not None and tier != "hot" else None,
        "engine_ready": timeline["engine_ready_at"],
    }
    for phase, at in marks.items():
        if at is not None:
            observe = {"model": model, "phase": phase}
            metrics.observe("sllm_cold_start_phase_seconds", observe, at - timeline["replica_started_at"])


class ModelServer:
    """Serve replica body for one model."""

    async def __init__(self, owner_app: str, config: ModelConfig) -> None:
        self._timeline: dict[str, float] = {
            "replica_started_at": time.time(),
            # Before the request that scaled the model up: a worker started ahead of demand.
            "worker_started_at": psutil.Process().create_time(),
        }
        if replica_workers.prepared_at is not None:
            self._timeline["worker_prepared_at"] = replica_workers.prepared_at
        configure_logging()
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._owner_app = owner_app
        self._config = config
        self._adapter_sources: dict[str, str] = {}
        context = ray.get_runtime_context()
        self._node_id = context.get_node_id()
        self._engine_ready = asyncio.Event()
        self._broken: str | None = None  # why this replica can no longer get an engine
        self._start_failure: str | None = None  # why its first engine could not be built
        self._replacements: list[float] = []  # monotonic, of engines replaced after a host died
        self._first_wave = True  # no reply of this engine has ended yet
        self._life = asyncio.get_running_loop().create_task(self._live())

    async def _live(self) -> None:
        """Get the first engine, then keep one (``_heal``). A first engine that cannot be
        had, for whatever reason, is a failed start: reported, and the cause of every
        request waiting here."""
        try:
            self._pool = await _node_pool(self._owner_app, self._node_id)
            await self._take_engine()
        except Exception as exc:
            cause = str(exc) if isinstance(exc, EngineStartError) else f"{type(exc).__name__}: {exc}"
            await self._report_failure(cause)
            self._start_failure = cause
            self._broken = f"model `{self._config.model}` failed to start: {cause}"
            # The requests waiting here get the cause; later ones are sent on by the ingress
            # (``ReplicaLeavingError``) until Serve stops this replica: its application is
            # removed or redeployed, or its health check fails.
            self._engine_ready.set()
            return
        await self._heal()

    async def _take_engine(self) -> None:
        """Claim a host from the node's pool and have it wake or build this model's
        engine; a build that fails ends in ``_start_failed``."""
        config = self._config
        # Beside the claim, not after it: a cold start needs the spec, a hot one drops it.
        spec = asyncio.ensure_future(self._spec())
        spec.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            lease: HostLease = await self._pool.claim.remote(
                self._replica,
                os.getpid(),
                config.engine_fingerprint(),
                replica_workers.own_worker_env(),
                model=config.model,
            )
        except BaseException:
            spec.cancel()
            raise
        if lease.asleep:
            spec.cancel()
        self._lease = lease
        self._timeline["host_claimed_at"] = time.time()
        self._channel = ChannelClient(lease.address, lease.pid)
        try:
            if lease.asleep:
                reply = await self._channel.call("wake", keep_asleep=config.keep_asleep)
            else:
                reply = await self._channel.call("start", spec=(await spec).to_json())
        except ChannelError as exc:
            await self._start_failed(str(exc))
        record = HostRecord.from_json(reply)
        self._timeline["engine_ready_at"] = time.time()
        self._start_kind = "hot" if lease.asleep else "cold"
        self._first_wave = True
        self._engine_ready.set()
        # The bookkeeping after the waiting requests' first steps: it takes tens of
        # milliseconds (actor lookups, the manager's handle).
        asyncio.get_running_loop().call_soon(self._started, record, lease.asleep, not self._replacements)

    def _started(self, record: HostRecord, woken: bool, first: bool) -> None:
        """A new engine in the metrics and the logs; the manager hears of the first (the
        model's failed starts are over) through the node's pool; a layout the load wrote
        goes to the store's DRAM."""
        config = self._config
        tier = "hot" if woken else (record.load.tier if record.load else "source")
        _record_start(config.model, tier, self._timeline, record)
        if not woken and record.load is not None:
            rate = record.load.bytes / max(record.load.seconds, 1e-9)
            metrics.observe("sllm_weights_load_bytes_per_second", {"model": config.model, "tier": tier}, rate)
        # Into DRAM for the next engine: a layout the load wrote, or weights it read from
        # a slower tier or the source (the locate beside the claim prepared nothing).
        if not woken and (record.load is None or record.load.layout_written or record.load.tier != DRAM):
            layout = engine_layout(config.engine_kwargs)
            prepare_checkpoint(self._owner_app, self._node_id, config.model, config.model_source, layout)
        if first:  # through the pool: a Serve handle of the replica's own is 0.05 CPU-s here
            self._pool.engine_started.remote(
                EngineStarted(config.model, config.engine_fingerprint(), self._replica)
            )
        logger.info("replica %s of %s ready (%s): %s", self._replica, config.model, tier, self._timeline)

    async def _heal(self) -> None:
        """When the engine host dies, take a new one at once: a cold start of about a
        second, where Serve would replace the replica only after its next health check
        (``health_check_period_s``) and a whole replica start. After ``MAX_REPLACEMENTS``
        in ``REPLACEMENT_WINDOW_S`` (a host that keeps dying), or a build that fails, the
        replica is broken: its health check fails and Serve replaces it."""
        while True:
            cause = await self._channel.wait_failed()
            self._engine_ready.clear()
            self._channel.close()
            now = time.monotonic()
            self._replacements = [t for t in self._replacements if now - t < REPLACEMENT_WINDOW_S] + [now]
            if len(self._replacements) > MAX_REPLACEMENTS:
                self._broken = f"{cause} ({len(self._replacements)} times in {REPLACEMENT_WINDOW_S:.0f} s)"
            else:
                model = self._config.model
                logger.warning("replica %s of %s: %s; taking a new engine host", self._replica, model, cause)
                try:
                    await self._take_engine()
                    metrics.count("sllm_engine_replacements_total", {"model": self._config.model})
                    continue
                except Exception as exc:
                    self._broken = f"{cause}; no new engine: {exc}"
            logger.error("replica %s of %s is broken: %s", self._replica, self._config.model, self._broken)
            self._engine_ready.set()  # the waiting requests fail with the cause
            return

    async def _engine(self) -> ChannelClient:
        """The channel of a working engine, waiting while the first is built or a dead
        host's is replaced."""
        waited = not self._engine_ready.is_set()
        await self._engine_ready.wait()
        if self._start_failure is not None:
            if not waited:  # the manager has the failure already: it, or a fix, is the answer
                raise ReplicaLeavingError(
                    f"replica {self._replica} of `{self._config.model}` is leaving", ENGINE_LOST_RETRY_S
                )
            raise ModelStartFailedError(self._config.model, self._start_failure, ENGINE_LOST_RETRY_S)
        if self._broken is not None:
            raise EngineLostError(
                f"the engine of model `{self._config.model}` is gone: {self._broken}", ENGINE_LOST_RETRY_S
            )
        return self._channel

    async def _spec(self) -> EngineSpec:
        """The engine to build, its weights where this node's store has them."""
        config = self._config
        devices: tuple[str, ...] = ()
        group_id = gcs = None
        if engine_workers(config.engine_kwargs) == 1:
            # The host's one worker uses this replica's reservation.
            devices = tuple(str(i) for i in ray.get_gpu_ids())
        else:  # the workers run in this replica's placement group, each in its bundle
            group_id = ray_compat.placement_group_id(get_current_placement_group())
            gcs = ray.get_runtime_context().gcs_address
        layout = engine_layout(config.engine_kwargs)
        located = await locate_checkpoint(
            self._owner_app, self._node_id, config.model, config.model_source, layout
        )
        self._timeline["checkpoint_located_at"] = time.time()
        return EngineSpec(
            config.model,
            config.model_source,
            config.engine_kwargs,
            config.engine_fingerprint(),
            devices,
            config.keep_asleep,
            group_id,
            gcs,
            located.tier,
            located.paths,
        )

    async def _start_failed(self, cause: str) -> None:
        """The engine could not be built: the host goes."""
        self._channel.close()
        self._pool.discard.remote(self._lease.host_id)
        raise EngineStartError(cause)

    async def _report_failure(self, cause: str) -> None:
        """The manager learns why the model cannot start here: it tells the clients
        waiting at the ingress and backs the model off."""
        logger.error("replica %s: model `%s` failed to start: %s", self._replica, self._config.model, cause)
        config = self._config
        with contextlib.suppress(Exception):  # the manager may be restarting: still fail
            manager = serve.get_deployment_handle(MANAGER_NAME, app_name=self._owner_app)
            call = manager.start_failed.remote(
                config.model, config.engine_fingerprint(), cause, self._replica
            )
            await asyncio.wait_for(call, 5)

    async def record(self) -> dict[str, Any]:
        """When this replica started, claimed its host and had its engine; and the host's
        own record, read now. For tests, benchmarks and status."""
        host = await (await self._engine()).call("record")
        return {
            "replica": self._replica,
            "pid": os.getpid(),
            "node_id": self._node_id,
            **self._timeline,
            "late_imports": replica_workers.imported_since_prepared(),
            "host": host,
        }

    @serve.multiplexed(max_num_models_per_replica=ADAPTERS_PER_REPLICA)
    async def _adapter(self, name: str) -> _LoadedAdapter:
        """The adapter ``name`` loaded into this replica's engine (Serve's multiplexing
        reports it, so its router prefers this replica for it)."""
        source = self._adapter_sources[name]
        await self._engine_load_adapter(await self._engine(), name, source)
        return _LoadedAdapter(name, source, self._lease.host_id)

    async def _engine_load_adapter(self, channel: ChannelClient, name: str, source: str) -> None:
        """Load the adapter into the engine from this node's store (its DRAM copy: the
        source is read once per node), or from its source when the store cannot say."""
        folder = await locate_adapter(self._owner_app, self._node_id, name, source)
        await channel.call("load_adapter", adapter=name, source=folder)

    async def _load_adapter(self, adapter: AdapterConfig) -> None:
        """Have the engine hold ``adapter`` before its request goes in: a first request loads
        it; an adapter registered again from another source is loaded again."""
        self._adapter_sources[adapter.adapter] = adapter.source
        try:
            loaded = await self._adapter(adapter.adapter)
            channel = await self._engine()
            if loaded.source != adapter.source or loaded.host_id != self._lease.host_id:
                await self._engine_load_adapter(channel, adapter.adapter, adapter.source)
                loaded.source, loaded.host_id = adapter.source, self._lease.host_id
        except ChannelError as exc:
            if self._channel.failure is not None:  # the host went away: a new one comes
                raise EngineLostError(
                    f"the engine host of model `{self._config.model}` went away; retry", ENGINE_LOST_RETRY_S
                ) from None
            # vLLM refused it (registration checked the layout, rank and modules already).
            raise BadRequestError(
                f"adapter `{adapter.adapter}` could not be loaded: {exc}", param="model"
            ) from None

    async def generate(
        self, endpoint: Endpoint, body: dict[str, Any], adapter: AdapterConfig | None = None
    ) -> AsyncIterator[Accepted | ResponseHead | str]:
        """Stream a reply as ``sllm_ray.protocol`` describes; a request for a LoRA adapter of
        this model (``body["model"]`` names it) once the engine holds it."""
        if self._first_wave:
            self._timeline.setdefault("first_request_at", time.time())
        await self._engine()  # a new replica's requests wait here for its engine
        if adapter is not None:
            await self._load_adapter(adapter)
        ready_for = time.time() - self._timeline["engine_ready_at"]
        start = self._start_kind if self._first_wave and ready_for < COLD_WINDOW_S else "warm"
        stream = (await self._engine()).generate(endpoint, body)
        first = asyncio.ensure_future(anext(stream))
        try:
            try:
                await asyncio.wait_for(asyncio.shield(first), ACCEPT_WINDOW_S)
            except TimeoutError:
                yield Accepted(self._replica, start_kind=start)  # not a stream: the head is the whole reply
                yield await first
            else:
                yield Accepted(self._replica, first.result(), start)
            async for item in stream:
                yield item
        except ChannelError as exc:
            # Its message names the host's process: for the log, not for the client.
            logger.warning("replica %s lost its engine host mid-request: %s", self._replica, exc)
            raise EngineLostError(
                f"the engine host of model `{self._config.model}` went away mid-request; retry",
                ENGINE_LOST_RETRY_S,
            ) from None
        finally:
            self._first_wave = False
            # The caller may have gone away mid-reply: end the stream, which aborts in vLLM.
            if not first.done():
                first.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await first
            await stream.aclose()

    async def check_health(self) -> None:
        if self._broken is not None:
            raise RuntimeError(self._broken)
        if self._engine_ready.is_set():  # else: a dead host's engine is being replaced
            await self._channel.call("health")

    def __del__(self) -> None:
        life = getattr(self, "_life", None)
        if life is not None:
            life.cancel()
        channel = getattr(self, "_channel", None)
        if channel is not None:
            channel.close()
        pool, lease = getattr(self, "_pool", None), getattr(self, "_lease", None)
        if pool is not None and lease is not None:
            pool.retire.remote(lease.host_id)  # its engine sleeps in the node's pool, or it exits


def build_model_deployment(
    config: ModelConfig, owner_app: str, preferred_node: str | None = None
) -> Application:
    """The model's Serve deployment, starting at ``min_replicas`` (zero by default).

    Its version is the engine fingerprint: redeploying with other autoscaling or limits
    updates the running replicas in place; other engine arguments, source or resources
    replace them. ``preferred_node`` (placement's choice) is where Serve starts replicas
    when it can; elsewhere when it cannot.
    """
    actor_options = config.resources.to_ray_actor_options()
    group: dict[str, Any] = {}
    workers = engine_workers(config.engine_kwargs)
    if workers > 1:
        # One bundle per model worker, all on one node; the replica sits in the first.
        bundles = config.resources.placement_bundles(workers)
        group = {"placement_group_bundles": bundles, "placement_group_strategy": "STRICT_PACK"}
        actor_options = {"num_cpus": bundles[0].get("CPU", 0), "num_gpus": bundles[0].get("GPU", 0)}
    elif preferred_node is not None:
        actor_options["label_selector"] = {NODE_ID_LABEL: preferred_node}
        actor_options["fallback_strategy"] = [{"label_selector": {}}]
    actor_options["runtime_env"] = replica_workers.runtime_env(owner_app)  # a worker started ahead of demand
    deployment = serve.deployment(ModelServer).options(
        name=config.deployment_name,
        version=config.engine_fingerprint(),
        autoscaling_config=config.autoscaling.to_serve(),
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests or -1,
        ray_actor_options=actor_options,
        # By import path: Serve pickles a class object by value, and cloudpickle's
        # by-value registry is not safe while two deploys overlap in the manager.
        request_router_config=RequestRouterConfig(request_router_class=ROUTER_PATH),
        **group,
        # Serve notices a replica whose process died only at its next health check, and
        # the streams resumed from it wait for the new replica that follows. Checks start
        # once the engine is built, and pass while a dead host's engine is replaced.
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=30,
        # Bounds how long in-flight requests may finish when a model is deleted.
        graceful_shutdown_timeout_s=30,
        # A leaving replica (scale to zero, deletion, redeploy) looks for requests still in
        # flight this often, Serve's first look included: 2 s by default, which every
        # DELETE and every scale to zero waited (and a hot start, for the engine to sleep).
        graceful_shutdown_wait_loop_s=GRACEFUL_SHUTDOWN_LOOP_S,
        **ray_compat.VERSIONED_DEPLOYMENT_OPTIONS,
    )
    return deployment.bind(owner_app, config)
