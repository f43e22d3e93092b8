"""Where a model's checkpoint is on a node: names and the question a replica asks.

Kept apart from the store actor so that a model replica, which asks, never imports what
the store needs (torch, safetensors): the replica is on the cold path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from sllm_ray.names import NAMESPACE, store_name

logger = logging.getLogger(__name__)

# A replica waits at most this long for the store's answer before loading from the source.
LOCATE_TIMEOUT_S = 2.0

SOURCE, DISK, DRAM = "source", "disk", "dram"


async def locate_checkpoint(app: str, node_id: str, model: str, source: str) -> dict[str, Any]:
    """Ask this node's store where the model is; the source when there is no store, or it
    does not answer in time (restarting after a crash): a replica never fails for it."""
    try:
        store = ray.get_actor(store_name(app, node_id), namespace=NAMESPACE)
        return await asyncio.wait_for(store.locate.remote(model, source), LOCATE_TIMEOUT_S)
    except (ValueError, TimeoutError, ray.exceptions.RayError) as exc:
        logger.warning(
            "checkpoint store on node %s unavailable (%s): loading %s from its source", node_id, exc, model
        )
        return {"tier": SOURCE}
