"""Engine hosts: processes that have imported vLLM and torch before any model needs them.

A host is a Ray actor started ahead of demand by its node's pool (``host_pool.py``). When
a model replica starts on that node it claims a host and asks it to build the model's
engine in-process (``inproc_core.py``), weights from the node's checkpoint store; the
replica then forwards requests to it. So the cold path has no vLLM import and no process
spawn, only the engine build. A host serves one engine and exits when released, or when
the replica that claimed it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from sllm_ray import metrics
from sllm_ray.engine.channel import ChannelServer
from sllm_ray.log_setup import configure_logging
from sllm_ray.names import NAMESPACE, pool_name
from sllm_ray.store.locate import engine_layout, locate_checkpoint, prepare_checkpoint

logger = logging.getLogger(__name__)

# How often a host checks that the replica which claimed it is still alive.
OWNER_CHECK_S = 2.0
# Environment of every host process: the CPU build keeps its model worker in-process
# only when vLLM's multiprocessing is off (it affects nothing else in AsyncLLM).
HOST_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


@dataclass(frozen=True)
class EngineSpec:
    """What a host needs to build one model's engine."""

    model: str
    model_source: str
    engine_kwargs: dict[str, Any]
    # Which engine this builds (``ModelConfig.engine_fingerprint``): a sleeping engine with
    # the same one can serve it.
    fingerprint: str
    # The accelerators Ray reserved for the replica (``ray.get_gpu_ids()`` there): the
    # host, started without any, builds the engine on these. Untested on GPUs.
    device_ids: tuple[str, ...] = ()
    # Whether the engine sleeps in the node's pool when its replica goes, or exits.
    keep_asleep: bool = True
    # The replica's placement group when the engine has several workers: vLLM starts them
    # in its bundles (untested on GPUs).
    placement_group: Any = None
    # Filled in by the host from its node's checkpoint store (``CheckpointStore.locate``):
    # the fastest tier and the load format's config naming the copies; none: the source.
    tier: str = "source"
    weights: dict[str, str] = field(default_factory=dict)

    @property
    def layout(self) -> str:
        return engine_layout(self.engine_kwargs)

    def engine_source(self) -> str:
        """What vLLM's ``model`` argument names: a converted checkpoint carries the config
        and tokenizer files beside the weights."""
        return self.weights.get("checkpoint", self.model_source)

    def vllm_kwargs(self) -> dict[str, Any]:
        if not self.weights:
            return dict(self.engine_kwargs)
        extra = dict(self.weights)
        return {**self.engine_kwargs, "load_format": "sllm_store", "model_loader_extra_config": extra}


def use_devices(device_ids: tuple[str, ...]) -> None:
    """Make the replica's reserved GPUs the only ones this process sees. Must run before
    CUDA is initialized here, which preparing a host does not do (untested on GPUs)."""
    if device_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(device_ids)


@dataclass
class HostRecord:
    """What a host did, in wall-clock seconds (``time.time()``): read by tests and the
    cold-start benchmark."""

    host_id: str
    node_id: str
    pid: int
    prepared_at: float
    import_s: float
    claimed_at: float | None = None
    claimed_by: str | None = None
    model: str | None = None
    tier: str | None = None
    # How the weights were stored: by Hugging Face name, or in this engine's own layout.
    layout: str | None = None
    engine_started_at: float | None = None
    weights_loaded_at: float | None = None
    engine_ready_at: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    # Where the replica sends requests (``channel.py``), once the engine is ready.
    channel: str | None = None
    fingerprint: str | None = None
    # Asleep since (its replica went away; the pool keeps it for the next one), or None.
    asleep_since: float | None = None
    # Replicas this engine served after waking (hot starts), and when it last woke.
    wakes: int = 0
    woke_at: float | None = None


class EngineHost:
    """One prepared process; at most one engine."""

    def __init__(self, app: str) -> None:
        configure_logging()
        started = time.time()
        # The imports a cold start would otherwise pay for, done ahead of demand; the
        # store actor's module too, which looking the store up by name imports.
        import sllm_ray.store.store_actor  # noqa: F401
        from sllm_ray.engine.openai_engine import OpenAIEngine
        from sllm_ray.engine.vllm_compat import prepare_engine_process

        prepare_engine_process()
        self._app = app
        self._engine_cls = OpenAIEngine
        # vLLM calls gc.collect() several times while building an engine; with everything
        # imported so far moved out of the collector's sight each call stays cheap.
        gc.collect()
        gc.freeze()
        context = ray.get_runtime_context()
        self._record = HostRecord(
            host_id=context.get_actor_id() or "",
            node_id=context.get_node_id(),
            pid=os.getpid(),
            prepared_at=time.time(),
            import_s=time.time() - started,
        )
        self._engine: Any = None
        self._keep_asleep = False
        self._channel: ChannelServer | None = None
        self._released = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None
        logger.info("engine host %s prepared in %.2f s", self._record.host_id, self._record.import_s)

    def record(self) -> dict[str, Any]:
        """The record, with the channel's request counts when serving."""
        record = asdict(self._record)
        if self._channel is not None:
            record["requests"] = dict(self._channel.stats)
        return record

    def claim(self, claimer: str) -> str:
        """Mark this host as ``claimer``'s; returns the host's id."""
        if self._record.claimed_by is not None:
            raise RuntimeError(f"engine host {self._record.host_id} is already claimed")
        self._record.claimed_by = claimer
        self._record.claimed_at = time.time()
        return self._record.host_id

    async def start(self, spec: EngineSpec, owner: Any = None) -> dict[str, Any]:
        """Build the engine, weights from the fastest tier of this node's store, or wake
        the sleeping one when it is this spec's (a hot start). ``owner`` (the replica's
        actor handle) is watched so the host retires when its replica is gone."""
        if self._engine is not None:
            if self._record.fingerprint != spec.fingerprint or self._record.asleep_since is None:
                raise RuntimeError(f"engine host {self._record.host_id} already runs {self._record.model}")
            await self._engine.wake()
            self._record.asleep_since = None
            self._record.wakes += 1
            self._record.woke_at = time.time()
            self._keep_asleep = spec.keep_asleep
            logger.info("woke the sleeping engine of %s", spec.model)
            self._watch_owner(owner)
            return self.record()
        use_devices(spec.device_ids)
        node = self._record.node_id
        located = await locate_checkpoint(self._app, node, spec.model, spec.model_source, spec.layout)
        spec = dataclasses.replace(spec, **located)
        self._record.model = spec.model
        self._record.fingerprint = spec.fingerprint
        self._record.tier = spec.tier
        self._record.engine_started_at = time.time()
        engine = self._engine_cls(
            spec.model,
            spec.engine_source(),
            spec.vllm_kwargs(),
            in_process=True,
            placement_group=spec.placement_group,
        )
        await engine.start()
        self._engine = engine
        self._record.engine_ready_at = time.time()
        self._record.phases = dict(engine.phases)
        from sllm_ray.engine.store_loader import LAST_LOAD  # this process has torch by now

        if spec.weights and LAST_LOAD:
            # Where the weights really came from (a DRAM copy evicted meanwhile: disk).
            self._record.tier = str(LAST_LOAD["tier"])
            self._record.layout = str(LAST_LOAD["layout"])
            self._record.weights_loaded_at = float(LAST_LOAD["finished_at"])
            self._record.phases["weights_s"] = float(LAST_LOAD["seconds"])
            rate = LAST_LOAD["bytes"] / max(LAST_LOAD["seconds"], 1e-9)
            metrics.observe(
                "sllm_weights_load_bytes_per_second", {"model": spec.model, "tier": self._record.tier}, rate
            )
            if LAST_LOAD["layout_written"]:  # into DRAM for the next engine of this layout
                prepare_checkpoint(self._app, node, spec.model, spec.model_source, spec.layout)
        self._channel = ChannelServer(engine.generate)
        self._record.channel = self._channel.address
        self._keep_asleep = spec.keep_asleep
        self._watch_owner(owner)
        return self.record()

    def _watch_owner(self, owner: Any) -> None:
        if owner is not None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(owner))

    async def _watch(self, owner: Any) -> None:
        while True:
            await asyncio.sleep(OWNER_CHECK_S)
            try:
                await owner.__ray_ready__.remote()
            except ray.exceptions.RayActorError:
                logger.warning("replica of %s is gone without retiring its engine host", self._record.model)
                self._watchdog = None  # this task ends here: retire must not cancel it
                await self.retire()
                return

    async def retire(self) -> None:
        """The replica is done with this host: put the engine to sleep and offer it to the
        node's pool (kept up to the pool's limit, least recently used out), or exit."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._engine is None or self._record.asleep_since is not None:
            return
        if not self._keep_asleep:
            self.release()
            return
        self._record.claimed_by = None
        self._record.asleep_since = time.time()
        try:
            await self._engine.sleep()
            me = ray.get_runtime_context().current_actor
            kept = await self._pool().park.remote(
                me, self._record.host_id, self._record.fingerprint, self._record.model
            )
        except (ValueError, ray.exceptions.RayError) as exc:
            logger.warning("cannot keep the engine of %s asleep (%s): exiting", self._record.model, exc)
            kept = False
        if not kept:
            self.release()

    def _pool(self) -> Any:
        """This node's host pool (ValueError when there is none)."""
        return ray.get_actor(pool_name(self._app, self._record.node_id), namespace=NAMESPACE)

    async def until_released(self) -> None:
        """Returns when this host is released; fails (RayActorError) when it dies: how a
        replica learns that requests on the channel will never be answered."""
        await self._released.wait()

    async def check_health(self) -> None:
        await self._engine.check_health()

    def release(self) -> None:
        """Shut the engine down and end this process (a host serves one engine)."""
        self._released.set()
        with contextlib.suppress(ValueError):  # the pool lets go of its reference
            self._pool().drop.remote(self._record.host_id)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def start_host(app: str, node_id: str) -> Any:
    """A new engine host pinned to ``node_id`` (its imports run in the background)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return (
        ray.remote(EngineHost)
        .options(
            num_cpus=0,
            max_restarts=0,
            max_concurrency=1000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            runtime_env={"env_vars": HOST_ENV},
        )
        .remote(app)
    )
