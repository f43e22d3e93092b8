"""The per-node services of an sllm_ray app: an engine host pool and a checkpoint store.

The model manager keeps one of each on every live node, checking for new nodes every few
seconds; a store or pool that dies is restarted by Ray. They are detached actors, named
after the app and the node: the data path runs through them (every engine host is a
child of its node's pool), so a manager that dies must not take them along, as Ray takes
the actors an actor owns. A restarted manager finds them again by name. The manager
removes them when the app is deleted (``close``, from its graceful shutdown) and when
their node is gone. It also asks every store to prepare each registered model and
records, from the stores' reports, which tier holds each model on each node, and follows
every pool's engine starts (``engine/start_feed.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sllm_ray import metrics, ray_compat
from sllm_ray.config import AppConfig, ModelConfig
from sllm_ray.control.placement import Estimate, NodeState, fits, rank
from sllm_ray.engine.host_pool import HostPool
from sllm_ray.engine.records import EngineStarted
from sllm_ray.names import NAMESPACE, checkpoint_key, layout_key, named_actor, pool_name, store_name
from sllm_ray.store.locate import DISK, DRAM, engine_layout
from sllm_ray.store.store_actor import CheckpointStore

logger = logging.getLogger(__name__)

# How long ``close`` waits for the stopped services' names to be free.
CLOSE_TIMEOUT_S = 5.0
# A node label naming the node's own folder under ``<data_dir>/store``: for nodes that share
# the filesystem holding ``data_dir`` (several Ray nodes on one machine, a network disk).
DISK_LABEL = "sllm-ray/disk"
# A pool's engine starts: how long one call of the manager's waits for the next, and how
# long after a failed call (the pool restarting) it calls again.
FOLLOW_WAIT_S = 30.0
FOLLOW_RETRY_S = 1.0


def _held(report: dict[str, Any]) -> dict[str, str]:
    """Checkpoint key -> the fastest tier holding it, from a store's report."""
    held = {key: DISK for key in report.get("disk", {})}
    held.update({key: DRAM for key in report.get("dram", {}).get("checkpoints", [])})
    return held


def _keys(config: ModelConfig) -> set[str]:
    """The model's checkpoint keys in a store: by name, and its engine layout."""
    return {
        checkpoint_key(config.model, config.model_source),
        layout_key(config.model, config.model_source, engine_layout(config.engine_kwargs)),
    }


@dataclass
class _Node:
    pool: Any
    store: Any
    follow: asyncio.Task[None] | None = None  # of the pool's engine starts


def _stop(node: _Node) -> None:
    if node.follow is not None:
        node.follow.cancel()
    for actor in (node.pool, node.store):
        with contextlib.suppress(Exception):  # gone already
            ray.kill(actor, no_restart=True)


def _named_actor_exists(name: str) -> bool:
    try:
        named_actor(name)
    except ValueError:
        return False
    return True


class NodeServices:
    def __init__(
        self, app: str, config: AppConfig, data_dir: Path, engine_started: Callable[[EngineStarted], None]
    ) -> None:
        self._app = app
        self._engine_started = engine_started
        self._config = config
        self._store_dir = data_dir / "store"
        self._nodes: dict[str, _Node] = {}
        self._reports: dict[str, dict[str, Any]] = {}  # node id -> store status
        self._pools: dict[str, dict[str, Any]] = {}  # node id -> pool status
        self._preparing: set[asyncio.Task[None]] = set()
        self._prepared: dict[str, ModelConfig] = {}  # model -> its config, last prepared
        self._evictions: dict[str, int] = {}  # node id -> evictions counted so far

    def _start(self, node_id: str, alive: set[str], disk: str | None) -> _Node:
        config = self._config
        pinned = {
            "num_cpus": 0,
            "namespace": NAMESPACE,
            "get_if_exists": True,
            "lifetime": "detached",
            "max_restarts": -1,
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
        }
        pool = (
            ray.remote(HostPool)
            .options(name=pool_name(self._app, node_id), max_concurrency=1000, **pinned)
            .remote(
                self._app,
                node_id,
                config.engine_hosts_per_node,
                config.replica_workers_per_node,
                config.engine_sleepers_per_node,
                config.engine_host_memory_bytes,
                config.engine_cls,
                config.engine_builds_per_node,
            )
        )
        store = (
            ray.remote(CheckpointStore)
            .options(name=store_name(self._app, node_id), **pinned)
            .remote(
                self._app,
                node_id,
                str(self._store_dir / disk if disk else self._store_dir),
                self._config.store_dram_dir,
                self._config.store_dram_bytes,
                alive,
            )
        )
        logger.info("started engine host pool and checkpoint store on node %s", node_id)
        return _Node(pool, store)

    def ensure(self) -> None:
        """One pool and one store on every live node."""
        labels = {n["NodeID"]: n.get("Labels") or {} for n in ray.nodes() if n["Alive"]}
        alive = set(labels)
        for node_id in alive - set(self._nodes):
            self._nodes[node_id] = self._start(node_id, alive, labels[node_id].get(DISK_LABEL))
        for node_id in set(self._nodes) - alive:
            _stop(self._nodes.pop(node_id))
            self._reports.pop(node_id, None)
            self._pools.pop(node_id, None)

    def close(self) -> None:
        """Stop every node's pool (and so its hosts) and store, and wait, a few seconds at
        most, until their names are free for the next deploy of the app."""
        nodes, self._nodes = list(self._nodes.items()), {}
        # The stores free their DRAM tiers first: killed, they would leave it in /dev/shm
        # until the app's next start on the node.
        with contextlib.suppress(Exception):  # a store gone or stuck: stopped all the same
            ray.get([node.store.close.remote() for _, node in nodes], timeout=CLOSE_TIMEOUT_S)
        for _, node in nodes:
            _stop(node)
        names = [
            n for node_id, _ in nodes for n in (pool_name(self._app, node_id), store_name(self._app, node_id))
        ]
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while names and time.monotonic() < deadline:
            names = [n for n in names if _named_actor_exists(n)]
            if names:
                time.sleep(0.1)
        if names:
            logger.warning("per-node services still up after %.0f s: %s", CLOSE_TIMEOUT_S, names)

    def prepare(self, config: ModelConfig) -> None:
        """Convert and prefetch the model, in the background, on ``store_prefetch_nodes``
        nodes (default: all)."""
        self._prepared[config.model] = config
        self._in_background(self._prepare(config))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._preparing.add(task)
        task.add_done_callback(self._preparing.discard)

    async def _prepare(self, config: ModelConfig) -> None:
        """One node first, one that holds the checkpoint already if any: the others then
        copy it from that node's store instead of reading the source again."""
        key = checkpoint_key(config.model, config.model_source)
        nodes = sorted(
            self._nodes.items(),
            key=lambda item: (key not in self._reports.get(item[0], {}).get("disk", {}), item[0]),
        )
        nodes = nodes[: self._config.store_prefetch_nodes or len(nodes)]
        for batch in (nodes[:1], nodes[1:]):
            await self._prepare_on(config, batch)

    async def _prepare_on(self, config: ModelConfig, nodes: list[tuple[str, _Node]]) -> None:
        args = (config.model, config.model_source, engine_layout(config.engine_kwargs))
        results = await asyncio.gather(
            *(n.store.prepare.remote(*args) for _, n in nodes), return_exceptions=True
        )
        for (node_id, _), result in zip(nodes, results, strict=True):
            if isinstance(result, Exception):
                logger.error("could not prepare %s on node %s: %s", config.model, node_id, result)

    def _restarted(self, node_id: str, before: dict[str, Any]) -> None:
        """A store that came back (a new instance) has an empty DRAM tier, and lost the
        preparations it was running: it is asked for those models again. The engines'
        own requests to prepare may have reached it while it was still restarting."""
        held = set(before["dram"]["checkpoints"]) | set(before["preparing"])
        configs = [c for c in self._prepared.values() if _keys(c) & held]
        logger.warning(
            "checkpoint store on node %s restarted: preparing %s again",
            node_id,
            sorted(c.model for c in configs) or "nothing",
        )
        for config in configs:
            self._in_background(self._prepare_on(config, [(node_id, self._nodes[node_id])]))

    def forget(self, config: ModelConfig) -> None:
        self._prepared.pop(config.model, None)
        for node in self._nodes.values():
            node.store.forget.remote(config.model, config.model_source)
            node.pool.forget.remote(config.model)

    async def refresh(self) -> None:
        """Read every store's report (what it holds in which tier) and pool's (engines
        asleep); follow the engine starts of a new node's pool."""
        for node_id, node in self._nodes.items():
            if node.follow is None:
                node.follow = asyncio.get_running_loop().create_task(self._follow(node_id, node.pool))
        nodes = list(self._nodes.items())
        reports = await asyncio.gather(
            *(n.store.status.remote() for _, n in nodes),
            *(n.pool.status.remote() for _, n in nodes),
            return_exceptions=True,
        )
        for (node_id, _), store, pool in zip(
            nodes, reports[: len(nodes)], reports[len(nodes) :], strict=True
        ):
            if isinstance(store, ray.exceptions.ActorDiedError) or isinstance(
                pool, ray.exceptions.ActorDiedError
            ):
                # Stopped for good (by an older manager's shutdown, during a redeploy of
                # the app): started again at the next ``ensure``.
                _stop(self._nodes.pop(node_id))
                continue
            if isinstance(store, dict):
                before = self._reports.get(node_id)
                self._reports[node_id] = store
                if before is not None and before["instance"] != store["instance"]:
                    self._restarted(node_id, before)
            if isinstance(pool, dict):
                self._pools[node_id] = pool

    async def _follow(self, node_id: str, pool: Any) -> None:
        """Hand each engine start of the pool to the manager as it comes, until the node's
        services are stopped (``_stop``)."""
        instance, seq = "", 0
        while True:
            try:
                starts = await pool.engines_started.remote(instance, seq, FOLLOW_WAIT_S)
            except ray.exceptions.RayError as exc:  # restarting: Ray brings it back
                logger.info("engine starts of node %s not read: %s", node_id, exc)
                await asyncio.sleep(FOLLOW_RETRY_S)
                continue
            instance, seq = starts.instance, starts.seq
            for started in starts.started:
                self._engine_started(started)

    def tiers(self, config: ModelConfig) -> dict[str, str]:
        """Per node, the fastest tier that held the model at the last refresh."""
        keys = _keys(config)
        out = {}
        for node_id, report in self._reports.items():
            tiers = {tier for key, tier in _held(report).items() if key in keys}
            if tiers:
                out[node_id] = DRAM if DRAM in tiers else DISK
        return out

    def record_metrics(self) -> None:
        """Per node, from the last reports: store bytes by tier, evictions, sleeping engines."""
        for node_id, report in self._reports.items():
            node = {"node": node_id}
            metrics.set_gauge("sllm_store_bytes", {**node, "tier": DRAM}, report["dram"]["used_bytes"])
            metrics.set_gauge("sllm_store_bytes", {**node, "tier": DISK}, sum(report["disk"].values()))
            evictions = report["dram"]["evictions"]
            counted = self._evictions.get(node_id, 0)
            # A restarted store counts from zero again.
            metrics.count(
                "sllm_store_evictions_total", node, evictions - counted if evictions >= counted else evictions
            )
            self._evictions[node_id] = evictions
        for node_id, pool in self._pools.items():
            metrics.set_gauge("sllm_sleeping_engines", {"node": node_id}, len(pool["sleeping"]))

    def placement(self, config: ModelConfig) -> list[Estimate]:
        """The live nodes that could start a replica of the model now, soonest ready first."""
        keys = _keys(config)
        options = config.resources.to_ray_actor_options()
        available = ray_compat.available_resources_per_node()
        states, size = [], 0
        for node_id in self._nodes:
            if not fits(available.get(node_id, {}), options):
                continue
            report = self._reports.get(node_id, {})
            size = max([size, *(report.get("disk", {}).get(k, 0) for k in keys)])
            sleeping = {s["fingerprint"] for s in self._pools.get(node_id, {}).get("sleeping", [])}
            states.append(
                NodeState(
                    node_id,
                    tiers=_held(report),
                    sleeping=frozenset(sleeping),
                    bandwidth=report.get("bandwidth", {}),
                    queued_bytes=report.get("queued_bytes", 0),
                )
            )
        return rank(states, keys, config.engine_fingerprint(), size)

    async def status(self) -> list[dict[str, Any]]:
        nodes = list(self._nodes.items())
        pools = await asyncio.gather(*(n.pool.status.remote() for _, n in nodes), return_exceptions=True)
        out = []
        for (node_id, _), pool in zip(nodes, pools, strict=True):
            out.append(
                {
                    "node_id": node_id,
                    "engine_hosts": pool if isinstance(pool, dict) else {"error": str(pool)},
                    "store": self._reports.get(node_id),
                }
            )
        return out
