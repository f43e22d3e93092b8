"""sllm_ray's metrics, through Ray's metrics API: Ray's Prometheus export carries them.

Every name starts with ``sllm_`` (Ray's exporter adds its ``ray_`` prefix in front). Each
process records only its own share: the ingress requests and time to first token, the
replicas their cold starts, the manager failed starts and running replicas, the stores
their tiers and evictions, the pools their sleeping engines. ``deploy/grafana/sllm-ray.json``
is built on exactly these names (a test checks it). Metric objects are made on first use,
in the process that records.
"""

from __future__ import annotations

import functools
from typing import Any

# Seconds: from a warm token (a few ms) to a slow cold start (minutes for big models).
TIME_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300]
BANDWIDTH_BUCKETS = [1e8, 3e8, 1e9, 3e9, 1e10, 3e10, 1e11]

# name -> (kind, description, tag keys, histogram buckets)
METRICS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "sllm_requests_total": ("counter", "Requests by model and HTTP status code.", ("model", "status"), None),
    "sllm_time_to_first_token_seconds": (
        "histogram",
        "Time to first token; start: cold (a replica was started for it), hot (a sleeping "
        "engine was woken for it) or warm.",
        ("model", "start"),
        TIME_BUCKETS,
    ),
    "sllm_request_latency_seconds": (
        "histogram",
        "Whole request, received to last byte.",
        ("model", "start"),
        TIME_BUCKETS,
    ),
    "sllm_resumed_streams_total": (
        "counter",
        "Streams continued on a new engine after theirs was lost mid-stream.",
        ("model",),
        None,
    ),
    "sllm_engine_replacements_total": (
        "counter",
        "Engines a replica took anew after its engine host died mid-life.",
        ("model",),
        None,
    ),
    "sllm_cold_starts_total": (
        "counter",
        "Replica starts by model and by how its engine came up: dram, disk, source (built "
        "from that tier) or hot (woken).",
        ("model", "tier"),
        None,
    ),
    "sllm_cold_start_phase_seconds": (
        "histogram",
        "Replica start phases, from the replica's start: host_claimed, weights_loaded, engine_ready.",
        ("model", "phase"),
        TIME_BUCKETS,
    ),
    "sllm_failed_starts_total": (
        "counter",
        "Replicas of the model whose engine could not be built (each reported failure).",
        ("model",),
        None,
    ),
    "sllm_queued_requests": ("gauge", "Requests waiting for a replica of the model.", ("model",), None),
    "sllm_running_replicas": ("gauge", "Running replicas of the model.", ("model",), None),
    "sllm_store_bytes": ("gauge", "Checkpoint bytes a node's store holds, by tier.", ("node", "tier"), None),
    "sllm_store_evictions_total": (
        "counter",
        "Checkpoints evicted from a node's DRAM tier.",
        ("node",),
        None,
    ),
    "sllm_weights_load_bytes_per_second": (
        "histogram",
        "Weights loaded into an engine per second, by tier.",
        ("model", "tier"),
        BANDWIDTH_BUCKETS,
    ),
    "sllm_sleeping_engines": ("gauge", "Engines asleep on a node.", ("node",), None),
}


@functools.cache
def metric(name: str) -> Any:
    """The Ray metric ``name`` (one of ``METRICS``), made in this process on first use."""
    from ray.util import metrics

    kind, description, tags, buckets = METRICS[name]
    if kind == "counter":
        return metrics.Counter(name, description=description, tag_keys=tags)
    if kind == "gauge":
        return metrics.Gauge(name, description=description, tag_keys=tags)
    return metrics.Histogram(name, description=description, boundaries=buckets, tag_keys=tags)


def _recording() -> bool:
    """Ray metrics exist only in Ray processes; the same code also runs in plain ones
    (tests, benchmarks), where nothing is recorded."""
    import ray

    return ray.is_initialized()


def count(name: str, tags: dict[str, str], value: float = 1.0) -> None:
    if _recording() and value:
        metric(name).inc(value, tags=tags)


def observe(name: str, tags: dict[str, str], value: float) -> None:
    if _recording():
        metric(name).observe(value, tags=tags)


def set_gauge(name: str, tags: dict[str, str], value: float) -> None:
    if _recording():
        metric(name).set(value, tags=tags)
