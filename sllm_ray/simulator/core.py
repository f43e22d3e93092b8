"""The discrete-event core: a trace's requests against a cluster run by one policy.

Each model has one replica at most (sllm_ray's default ``max_replicas: 1``) on one GPU,
which serves all its requests at once (continuous batching): a request waits only for its
replica to be ready. What happens when, from the project's own code:

- a start goes to the first of ``control.placement.rank`` over the nodes that hold
  something of the model (a sleeping engine, the checkpoint in DRAM) and the next node
  with a free GPU, each described as the model manager describes it (``NodeState``);
- a replica that goes puts its engine to sleep on its node (``engine.sleepers``, least
  recently used out); a checkpoint read from disk is cached in the node's DRAM tier
  (``store.dram_tier.LruBudget``);
- a replica goes after its keep-alive, fixed or from ``control.keep_alive``'s windows.

Seconds come from the calibration (``calibration.py``): Serve's part of a start
(``replica_start_s``, or ``plain_start_s`` without prepared hosts) plus placement's
estimate (the wake, or the build and the weights at the tier's bandwidth).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sllm_ray.control.keep_alive import FIXED, IdleHistogram, Windows
from sllm_ray.control.placement import DISK, DRAM, HOT, NodeState, rank
from sllm_ray.engine.sleepers import Sleepers
from sllm_ray.simulator.calibration import Calibration
from sllm_ray.simulator.policies import Policy
from sllm_ray.store.dram_tier import BudgetError, LruBudget
from sllm_ray.workload.traces import Request

GB = 1e9
STOP, PREWARM = 0, 1


@dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus_per_node: int
    keep_alive_s: float = 300.0
    dram_tier_bytes: int = 256 * 2**30
    adaptive_bin_s: float = 60.0


@dataclass
class _Node:
    index: int
    free_gpus: int
    sleepers: Sleepers[str, str]
    dram: LruBudget[str]


@dataclass
class _Model:
    name: str
    size_bytes: int
    histogram: IdleHistogram | None
    node: _Node | None = None
    ready_at: float = 0.0
    loaded_since: float = 0.0
    busy_until: float = 0.0
    generation: int = 0
    windows: Windows | None = None  # as of its last request


@dataclass
class Result:
    policy: str
    requests: int = 0
    rejected: int = 0
    waited: int = 0  # requests that waited for a start (cold or hot)
    starts: Counter[str] = field(default_factory=Counter)  # by tier
    gpu_seconds: float = 0.0
    dram_byte_seconds: float = 0.0
    ttfts: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        ttft = np.percentile(self.ttfts, [50, 90, 99]) if self.ttfts else [None] * 3
        served = self.requests - self.rejected
        return {
            "requests": self.requests,
            "rejected": self.rejected,
            "ttft_p50_s": _round(ttft[0]),
            "ttft_p90_s": _round(ttft[1]),
            "ttft_p99_s": _round(ttft[2]),
            "cold_starts": self.waited,
            "cold_start_fraction": round(self.waited / served, 5) if served else None,
            "starts": dict(self.starts),
            "gpu_seconds": round(self.gpu_seconds, 1),
            "dram_gb_seconds": round(self.dram_byte_seconds / GB, 1),
            "wall_s": round(self.wall_s, 2),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


class Simulation:
    def __init__(
        self, policy: Policy, cluster: Cluster, calibration: Calibration, sizes: dict[str, int]
    ) -> None:
        self.policy, self.cluster, self.cal = policy, cluster, calibration
        limit = policy.sleep_limit(cluster.gpus_per_node)
        self._nodes = [
            _Node(i, cluster.gpus_per_node, Sleepers(limit), LruBudget(cluster.dram_tier_bytes))
            for i in range(cluster.nodes)
        ]
        self._models = {
            name: _Model(
                name,
                size,
                IdleHistogram(bin_s=cluster.adaptive_bin_s) if policy.adaptive_keep_alive else None,
            )
            for name, size in sizes.items()
        }
        self._asleep_at: dict[str, set[int]] = {name: set() for name in sizes}
        self._cached_at: dict[str, set[int]] = {name: set() for name in sizes}
        self._cursor = 0
        self._events: list[tuple[float, int, int, str, int]] = []
        self._seq = 0
        self._dram_bytes = 0
        self._dram_since = 0.0
        self._timings = calibration.engine_timings()
        self._bandwidth = calibration.bandwidth()
        self.result = Result(policy.name)

    # Time and memory.

    def _push(self, at: float, kind: int, model: _Model) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, model.name, model.generation))

    def _dram(self, now: float, delta: int) -> None:
        self.result.dram_byte_seconds += self._dram_bytes * (now - self._dram_since)
        self._dram_bytes += delta
        self._dram_since = now

    # Starts and stops.

    def _free_node(self) -> _Node | None:
        """The next node with a free GPU, round robin (replicas spread)."""
        for step in range(len(self._nodes)):
            node = self._nodes[(self._cursor + step) % len(self._nodes)]
            if node.free_gpus:
                self._cursor = (node.index + 1) % len(self._nodes)
                return node
        return None

    def _state(self, node: _Node, model: _Model) -> NodeState:
        if model.name in node.dram:
            tiers = {model.name: DRAM}
        else:
            tiers = {model.name: DISK} if self.policy.checkpoint_store else {}
        asleep = frozenset({model.name}) if node.index in self._asleep_at[model.name] else frozenset()
        return NodeState(str(node.index), tiers, asleep, self._bandwidth)

    def _start(self, model: _Model, now: float) -> bool:
        held = self._asleep_at[model.name] | self._cached_at[model.name]
        candidates = [self._nodes[i] for i in held if self._nodes[i].free_gpus]
        spare = self._free_node()
        if spare is not None:
            candidates.append(spare)
        if not candidates:
            return False
        best = rank(
            [self._state(n, model) for n in candidates],
            (model.name,),
            model.name,
            model.size_bytes,
            self._timings,
        )[0]
        node = self._nodes[int(best.node_id)]
        if best.tier == HOT:
            node.sleepers.take(model.name)
            self._asleep_at[model.name].discard(node.index)
            self._dram(now, -model.size_bytes)
        elif self.policy.checkpoint_store:
            self._cache(node, model, now)
        prepared = self.policy.prepared_hosts or best.tier == HOT
        overhead = self.cal.replica_start_s if prepared else self.cal.plain_start_s
        node.free_gpus -= 1
        model.node, model.loaded_since = node, now
        model.ready_at = now + overhead + best.seconds
        self.result.starts[best.tier] += 1
        return True

    def _cache(self, node: _Node, model: _Model, now: float) -> None:
        """The checkpoint stays in the node's DRAM tier after the load (LRU within budget)."""
        if model.name in node.dram:
            node.dram.touch(model.name)
            return
        try:
            victims = node.dram.victims_for(model.size_bytes)
        except BudgetError:
            return
        for victim in victims:
            node.dram.remove(victim)
            self._cached_at[victim].discard(node.index)
            self._dram(now, -self._models[victim].size_bytes)
        node.dram.add(model.name, model.size_bytes)
        self._cached_at[model.name].add(node.index)
        self._dram(now, model.size_bytes)

    def _stop(self, model: _Model, now: float) -> None:
        node = model.node
        assert node is not None
        self.result.gpu_seconds += now - model.loaded_since
        node.free_gpus += 1
        model.node = None
        if node.sleepers.limit <= 0 or (model.windows is not None and not model.windows.keeps_engine_asleep):
            return
        self._asleep_at[model.name].add(node.index)
        self._dram(now, model.size_bytes)  # a sleeping engine's weights wait in host memory
        for evicted in node.sleepers.add(model.name, model.name, model.name):
            self._asleep_at[evicted].discard(node.index)
            self._dram(now, -self._models[evicted].size_bytes)

    # Requests and timers.

    def _windows(self, model: _Model) -> Windows:
        if model.histogram is None:
            return Windows(0.0, self.cluster.keep_alive_s, FIXED)
        return model.histogram.windows(self.cluster.keep_alive_s)

    def _idle(self, model: _Model) -> None:
        """After a request: when the replica goes (and comes back, pre-warmed)."""
        model.generation += 1
        windows = model.windows = self._windows(model)
        if windows.prewarm_s > 0:
            self._push(model.busy_until, STOP, model)
            self._push(model.busy_until + windows.prewarm_s, PREWARM, model)
            self._push(model.busy_until + windows.prewarm_s + windows.keep_alive_s, STOP, model)
            return
        lag = self.cal.scale_down_lag_s if self.policy.serve_autoscaler else 0.0
        self._push(model.busy_until + lag + windows.keep_alive_s, STOP, model)

    def _arrive(self, request: Request) -> None:
        model, now = self._models[request.model], request.at
        self.result.requests += 1
        if model.histogram is not None:
            model.histogram.observe(now)
        if model.node is None and not self._start(model, now):
            self.result.rejected += 1
            return
        wait = max(0.0, model.ready_at - now)
        if wait > 0:
            self.result.waited += 1
            self.result.waits.append(wait)
        ttft = wait + self.cal.warm_ttft_s + self.cal.prefill_s_per_token * request.prompt_tokens
        self.result.ttfts.append(ttft)
        end = now + ttft + self.cal.decode_s_per_token * request.output_tokens
        model.busy_until = max(model.busy_until, end)
        self._idle(model)

    def _fire(self, until: float) -> None:
        while self._events and self._events[0][0] <= until:
            at, _, kind, name, generation = heapq.heappop(self._events)
            model = self._models[name]
            if generation != model.generation:
                continue
            if kind == STOP and model.node is not None:
                self._stop(model, at)
            elif kind == PREWARM and model.node is None:
                self._start(model, at)

    def run(self, requests: Iterable[Request], duration_s: float) -> Result:
        started = time.perf_counter()
        for request in requests:
            self._fire(request.at)
            self._arrive(request)
        self._fire(duration_s)
        for model in self._models.values():
            if model.node is not None:
                self._stop(model, duration_s)
        self._dram(duration_s, 0)
        self.result.wall_s = time.perf_counter() - started
        return self.result
