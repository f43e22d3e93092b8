"""Names of the things an sllm_ray application creates in a Ray cluster, in one place.

Every process that looks something up by name (the ingress finding a model's app, a
replica finding its node's host pool and checkpoint store) imports only this module.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

# Ray namespace of the per-node actors (host pools, checkpoint stores).
NAMESPACE = "sllm_ray"
# The model manager's deployment in the sllm_ray application (replicas report to it).
MANAGER_NAME = "model-manager"


def _readable(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def digest(text: str, length: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def model_app_prefix(owner: str) -> str:
    """Prefix of the model applications of the sllm_ray application ``owner``: two sllm_ray
    applications in one cluster each manage only their own."""
    return f"{owner}-model-"


def model_app_name(owner: str, model: str) -> str:
    """A Serve application name for the model: readable, and unique even when two model
    names differ only in characters that are replaced."""
    return f"{model_app_prefix(owner)}{_readable(model)}-{digest(model, 8)}"


def pool_name(app: str, node_id: str) -> str:
    return f"{app}:host-pool:{node_id}"


def store_name(app: str, node_id: str) -> str:
    return f"{app}:store:{node_id}"


def named_actor(name: str) -> Any:
    """The app's per-node actor called ``name`` (``pool_name``, ``store_name``); ValueError
    when there is none. Ray is imported here, not above: the records and the ingress that
    import this module for names alone do not need it."""
    import ray

    return ray.get_actor(name, namespace=NAMESPACE)


NODE_PREFIX = 12  # characters of a node id in per-node folder names


def dram_folder(app: str, node_id: str) -> str:
    """The DRAM tier's folder (under ``store_dram_dir``) of the app's store on a node."""
    return f"{app}-{node_id[:NODE_PREFIX]}"


def dram_folder_node(app: str, folder: str) -> str | None:
    """The node-id prefix of one of the app's ``dram_folder`` names; None for others."""
    match = re.fullmatch(re.escape(app) + rf"-([0-9a-f]{{{NODE_PREFIX}}})", folder)
    return match.group(1) if match else None


def checkpoint_key(model: str, source: str) -> str:
    """A folder name for the model's converted checkpoint; a new source is a new key."""
    return f"{_readable(model)}-{digest(source, 10)}"


def layout_key(model: str, source: str, layout: str) -> str:
    """A folder name for the model's engine-layout checkpoint (``store.locate.engine_layout``)."""
    return f"{checkpoint_key(model, source)}.{layout}"


# Ray's resource of the head node: what must outlive the worker nodes (the manager, its
# argument checker) asks for a sliver of it.
ON_HEAD = {"node:__internal_head__": 0.001}
