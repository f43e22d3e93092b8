"""The per-model deployment ``model:<name>``: a thin replica in front of an engine host.

The replica holds the model's resource reservation and nothing heavy: it never imports
vLLM. On start it claims a prepared engine host on its own node and has it build the
engine (weights from the node's checkpoint store); then it forwards requests to the host
over a local ZeroMQ channel (``engine/channel.py``) and streams the replies back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig
from ray.util import get_current_placement_group

from sllm_ray import metrics
from sllm_ray.config import ModelConfig, engine_workers
from sllm_ray.engine.channel import ChannelClient
from sllm_ray.engine.host import EngineSpec, start_host
from sllm_ray.log_setup import configure_logging
from sllm_ray.names import NAMESPACE, pool_name
from sllm_ray.protocol import ACCEPT_WINDOW_S, Accepted, Endpoint, ResponseHead
from sllm_ray.serving.router import LocalFirstRouter

logger = logging.getLogger(__name__)

# The requests that reach a new replica before its first reply ended (and at most this long
# after its engine became ready) waited for it: Serve hands a new replica the requests
# queued for it at once, but on a busy machine not always within a second.
COLD_WINDOW_S = 10.0

# Ray's label naming each node by its id.
NODE_ID_LABEL = "ray.io/node-id"


async def _claim_host(owner_app: str, node_id: str, replica: str, fingerprint: str) -> Any:
    try:
        pool = ray.get_actor(pool_name(owner_app, node_id), namespace=NAMESPACE)
    except ValueError:
        # No pool on this node (yet): a host of our own, paying the vLLM import now.
        logger.warning("no engine host pool on node %s: starting a host for %s (slow)", node_id, replica)
        host = start_host(owner_app, node_id)
        await host.claim.remote(replica)
        return host
    return await pool.claim.remote(replica, fingerprint)


def _record_start(model: str, tier: str, timeline: dict[str, float], host: dict[str, Any]) -> None:
    """A replica start in the metrics: its tier, and its phases from the replica's start."""
    metrics.count("sllm_cold_starts_total", {"model": model, "tier": tier})
    marks = {
        "host_claimed": timeline["host_claimed_at"],
        "weights_loaded": host.get("weights_loaded_at") if tier != "hot" else None,
        "engine_ready": timeline["engine_ready_at"],
    }
    for phase, at in marks.items():
        if at is not None:
            observe = {"model": model, "phase": phase}
            metrics.observe("sllm_cold_start_phase_seconds", observe, at - timeline["replica_started_at"])


class ModelServer:
    """Serve replica body for one model."""

    async def __init__(self, owner_app: str, config: ModelConfig) -> None:
        self._timeline: dict[str, float] = {"replica_started_at": time.time()}
        configure_logging()
        self._replica = serve.get_replica_context().replica_id.unique_id
        context = ray.get_runtime_context()
        node_id = context.get_node_id()
        if engine_workers(config.engine_kwargs) == 1:
            # The host's one worker uses this replica's reservation.
            devices, group = tuple(str(i) for i in ray.get_gpu_ids()), None
        else:  # the workers run in this replica's placement group, each in its bundle
            devices, group = (), get_current_placement_group()
        spec = EngineSpec(
            config.model,
            config.model_source,
            config.engine_kwargs,
            config.engine_fingerprint(),
            devices,
            config.keep_asleep,
            group,
        )
        self._host = await _claim_host(owner_app, node_id, self._replica, spec.fingerprint)
        self._timeline["host_claimed_at"] = time.time()
        try:
            self._host_record: dict[str, Any] = await self._host.start.remote(spec, context.current_actor)
        except Exception:
            host, self._host = self._host, None
            host.release.remote()  # Serve retries with a new replica, which claims a new host
            raise
        self._timeline["engine_ready_at"] = time.time()
        woken = (
            self._host_record["wakes"] > 0
            and self._host_record["woke_at"] >= self._timeline["replica_started_at"]
        )
        self._start_kind = "hot" if woken else "cold"
        self._first_wave = True
        _record_start(
            config.model,
            "hot" if woken else str(self._host_record["tier"]),
            self._timeline,
            self._host_record,
        )
        self._channel = ChannelClient(self._host_record["channel"])
        self._host_watch = asyncio.get_running_loop().create_task(self._watch_host())
        logger.info(
            "replica %s of %s ready: %s %s", self._replica, config.model, self._timeline, self._host_record
        )

    async def _watch_host(self) -> None:
        try:
            await self._host.until_released.remote()
        except ray.exceptions.RayActorError as exc:
            logger.error("engine host of replica %s died: %s", self._replica, exc)
            self._channel.fail(f"the engine host died: {exc}")

    async def record(self) -> dict[str, Any]:
        """When this replica started, claimed its host and had its engine; and the host's
        own record, read now. For tests, benchmarks and status."""
        host = await self._host.record.remote()
        return {"replica": self._replica, "pid": os.getpid(), **self._timeline, "host": host}

    async def generate(
        self, endpoint: Endpoint, body: dict[str, Any]
    ) -> AsyncIterator[Accepted | ResponseHead | str]:
        """Stream a reply as ``sllm_ray.protocol`` describes."""
        # The requests that reach a new replica first waited for it to start.
        ready_for = time.time() - self._timeline["engine_ready_at"]
        start = self._start_kind if self._first_wave and ready_for < COLD_WINDOW_S else "warm"
        stream = self._channel.generate(endpoint, body)
        first = asyncio.ensure_future(anext(stream))
        try:
            try:
                await asyncio.wait_for(asyncio.shield(first), ACCEPT_WINDOW_S)
            except TimeoutError:
                yield Accepted(self._replica, start=start)  # not a stream: the head is the whole reply
                yield await first
            else:
                yield Accepted(self._replica, first.result(), start)
            async for item in stream:
                yield item
        finally:
            self._first_wave = False
            # The caller may have gone away mid-reply: end the stream, which aborts in vLLM.
            if not first.done():
                first.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await first
            await stream.aclose()

    async def check_health(self) -> None:
        await self._host.check_health.remote()

    def __del__(self) -> None:
        channel = getattr(self, "_channel", None)
        if channel is not None:
            channel.close()
        host = getattr(self, "_host", None)
        if host is not None:
            host.retire.remote()  # its engine sleeps in the node's pool, or it exits


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
    deployment = serve.deployment(ModelServer).options(
        name=config.deployment_name,
        version=config.engine_fingerprint(),
        autoscaling_config=config.autoscaling.to_serve(),
        max_ongoing_requests=config.max_ongoing_requests,
        max_queued_requests=config.max_queued_requests or -1,
        ray_actor_options=actor_options,
        request_router_config=RequestRouterConfig(request_router_class=LocalFirstRouter),
        **group,
        # The engine build is the slow part of a replica's start; Serve's default
        # health-check period would otherwise probe a half-built engine.
        health_check_period_s=10,
        health_check_timeout_s=30,
        # Bounds how long in-flight requests may finish when a model is deleted.
        graceful_shutdown_timeout_s=30,
        _internal=True,  # Serve only takes an explicit version from internal callers
    )
    return deployment.bind(owner_app, config)
