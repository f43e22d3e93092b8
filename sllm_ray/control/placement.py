"""Where a model's next replica should start: the node where its engine is ready soonest.

As ServerlessLLM's storage-aware scheduler does, every node gets an estimate of the time
from "start a replica here" to "engine ready", from what the node holds of the model:

- hot: an engine of this model asleep in one of the node's hosts (woken, not built);
- dram: the checkpoint in the store's DRAM tier (mapped at the DRAM bandwidth);
- disk: on the store's local disk (read at the disk bandwidth, behind the store's queue);
- remote: nowhere on the node (copied from a peer's store, or the source, behind the queue).

Bandwidths are measured by each store when it starts (``store/bandwidth.py``); the
queue is the bytes a store still has to prepare before it could start on this model.
Pure logic: the model manager feeds it the stores' and pools' reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

HOT, DRAM, DISK, REMOTE = "hot", "dram", "disk", "remote"

# Besides moving the weights: waking a sleeping engine, and building one (measured on the
# 2-core machine: engine build about 0.3 s, `benchmarks/cold_start.py`).
WAKE_S = 0.05
BUILD_S = 0.3
# Between nodes, until a store has measured a copy from a peer: 10 Gb/s.
DEFAULT_NETWORK_BYTES_PER_S = 1.25e9


@dataclass(frozen=True)
class EngineTimings:
    """Seconds besides moving the weights; the simulator passes its calibrated ones."""

    wake_s: float = WAKE_S
    build_s: float = BUILD_S


DEFAULT_TIMINGS = EngineTimings()


@dataclass(frozen=True)
class NodeState:
    """One node, as its checkpoint store and engine-host pool last reported it."""

    node_id: str
    # Checkpoint key -> the fastest tier holding it (``dram`` or ``disk``).
    tiers: Mapping[str, str] = field(default_factory=dict)
    # Engine fingerprints of the engines asleep in the node's hosts.
    sleeping: frozenset[str] = frozenset()
    # Bytes per second: ``dram``, ``disk``, ``network``.
    bandwidth: Mapping[str, float] = field(default_factory=dict)
    # Bytes the store still has to prepare (convert, copy, prefetch).
    queued_bytes: int = 0


@dataclass(frozen=True)
class Estimate:
    node_id: str
    tier: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def fits(available: Mapping[str, float], actor_options: Mapping[str, Any]) -> bool:
    """Whether a node with ``available`` resources (Ray's names) can start an actor with
    these Ray actor options now."""
    needs = {
        "CPU": actor_options.get("num_cpus", 0) or 0,
        "GPU": actor_options.get("num_gpus", 0) or 0,
        "memory": actor_options.get("memory", 0) or 0,
        **actor_options.get("resources", {}),
    }
    return all(available.get(name, 0) >= amount for name, amount in needs.items() if amount)


def estimate(
    node: NodeState,
    keys: Iterable[str],
    fingerprint: str,
    size_bytes: int,
    timings: EngineTimings = DEFAULT_TIMINGS,
) -> Estimate:
    """Seconds until an engine of the model could be ready on ``node``. ``keys`` are the
    checkpoint's store keys (by name, and its engine layout): the fastest held counts."""
    if fingerprint in node.sleeping:
        return Estimate(node.node_id, HOT, timings.wake_s)
    held = {node.tiers[k] for k in keys if k in node.tiers}
    bandwidth = {"network": DEFAULT_NETWORK_BYTES_PER_S, **node.bandwidth}
    if DRAM in held:
        return Estimate(node.node_id, DRAM, timings.build_s + size_bytes / bandwidth.get(DRAM, 1e10))
    queue_s = node.queued_bytes / bandwidth.get(DISK, 1e9)
    if DISK in held:
        return Estimate(node.node_id, DISK, timings.build_s + queue_s + size_bytes / bandwidth.get(DISK, 1e9))
    return Estimate(node.node_id, REMOTE, timings.build_s + queue_s + size_bytes / bandwidth["network"])


def rank(
    nodes: Iterable[NodeState],
    keys: Iterable[str],
    fingerprint: str,
    size_bytes: int,
    timings: EngineTimings = DEFAULT_TIMINGS,
) -> list[Estimate]:
    """Every node's estimate, soonest ready first (ties: by node id, so stable)."""
    keys = tuple(keys)
    return sorted(
        (estimate(n, keys, fingerprint, size_bytes, timings) for n in nodes),
        key=lambda e: (e.seconds, e.node_id),
    )
