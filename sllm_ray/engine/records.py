"""Typed records that cross processes in the engine room.

A replica, its node's host pool and an engine host live in different processes: the
replica and the pool talk through Ray (these dataclasses pickle), the replica and the
host through the host's local channel (``channel.py``, JSON: ``to_json``/``from_json``).
Nothing here imports vLLM, torch or Ray.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self

from sllm_ray.names import digest


class _Json:
    """Dataclasses that travel as JSON objects."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EngineSpec(_Json):
    """What a host needs to build one model's engine."""

    model: str
    model_source: str
    engine_kwargs: dict[str, Any]
    # Which engine this builds (``ModelConfig.engine_fingerprint``): a sleeping engine with
    # the same one can serve it.
    fingerprint: str
    # The accelerators Ray reserved for the replica (``ray.get_gpu_ids()`` there): the
    # host builds the engine on these and no others. Untested on GPUs.
    device_ids: tuple[str, ...] = ()
    # Whether the engine sleeps in the node's pool when its replica goes, or exits.
    keep_asleep: bool = True
    # Several model workers: the replica's placement group (its id, hex) and the cluster
    # to reach it through; vLLM's Ray executor starts the workers in its bundles.
    placement_group_id: str | None = None
    gcs_address: str | None = None
    # From the node's checkpoint store (``CheckpointStore.locate``): the fastest tier
    # holding the model and the load format's config naming the copies; none: the source.
    tier: str = "source"
    store_paths: dict[str, str] = field(default_factory=dict)

    def engine_source(self) -> str:
        """What vLLM's ``model`` argument names: a converted checkpoint carries the config
        and tokenizer files beside the weights."""
        return self.store_paths.get("checkpoint", self.model_source)

    def vllm_kwargs(self) -> dict[str, Any]:
        if not self.store_paths:
            return dict(self.engine_kwargs)
        extra = dict(self.store_paths)
        return {**self.engine_kwargs, "load_format": "sllm_store", "model_loader_extra_config": extra}


@dataclass(frozen=True)
class LoadReport(_Json):
    """How one engine's weights were loaded, merged over its workers."""

    tier: str  # where the weights came from: dram, disk
    layout: str  # how they were stored: hf_names or engine_layout
    seconds: float  # the slowest worker's load
    bytes: int  # over all workers
    finished_at: float  # wall clock, the last worker's
    # Whether this load wrote the engine layout (the store then caches it in DRAM).
    layout_written: bool = False

    @classmethod
    def merge(cls, reports: list[LoadReport]) -> LoadReport | None:
        """One report for an engine from its workers' (None when none used the store)."""
        if not reports:
            return None
        slowest = max(reports, key=lambda r: r.seconds)
        return cls(
            tier=slowest.tier,
            layout=slowest.layout,
            seconds=slowest.seconds,
            bytes=sum(r.bytes for r in reports),
            finished_at=max(r.finished_at for r in reports),
            layout_written=any(r.layout_written for r in reports),
        )


@dataclass
class HostRecord(_Json):
    """What a host did, in wall-clock seconds (``time.time()``): read by the replica,
    tests and the cold-start benchmark."""

    host_id: str
    pid: int
    forked_at: float
    model: str | None = None
    fingerprint: str | None = None
    # Whether the engine sleeps in the pool when its replica goes (the model's setting).
    keep_asleep: bool = False
    engine_started_at: float | None = None
    engine_ready_at: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    load: LoadReport | None = None
    # Asleep since (its replica went away; the pool keeps it for the next one), or None.
    asleep_since: float | None = None
    # Replicas this engine served after waking (hot starts), and when it last woke.
    wakes: int = 0
    woke_at: float | None = None
    requests: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostRecord:
        load = data.get("load")
        record = super().from_json({**data, "load": None})
        record.load = LoadReport.from_json(load) if load else None
        return record


@dataclass(frozen=True)
class HostLease(_Json):
    """A host handed to a replica by its node's pool."""

    host_id: str
    pid: int
    # The host's channel (``channel.py``): control calls and the token path.
    address: str
    # Whether its engine is this replica's, asleep (a hot start: wake it, no build).
    asleep: bool = False


def host_address(run_dir: str, host_id: str) -> str:
    """The Unix socket of a host's channel: short, since a socket path has at most 107
    bytes."""
    return f"ipc://{run_dir}/h-{digest(host_id, 12)}.sock"


@dataclass(frozen=True)
class EngineStarted:
    """A replica has its first engine: its model's failed starts are over. The replica
    tells its node's pool, which the model manager follows (``start_feed.py``)."""

    model: str
    fingerprint: str  # the engine's (``ModelConfig.engine_fingerprint``)
    replica: str


@dataclass(frozen=True)
class EngineStarts:
    """A pool's engine starts after a follower's mark. ``instance`` is new each time the
    pool starts; ``seq`` counts its starts, the follower's next mark."""

    instance: str
    seq: int
    started: tuple[EngineStarted, ...]
