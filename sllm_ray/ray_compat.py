"""Every use of a Ray or Serve private API, in one place.

Each function names the private thing it relies on; ``tests/unit/test_ray_compat.py``
pins the behaviour the project needs from it, so a Ray upgrade that moves one fails
there first. Public Ray APIs are used directly everywhere else.
"""

from __future__ import annotations

import threading
from typing import Any

import ray


def available_resources_per_node() -> dict[str, dict[str, float]]:
    """Free resources of each live node, by node id: the dashboard's own view; Ray has no
    public per-node one (``ray._private.state``)."""
    return ray._private.state.available_resources_per_node()


def autoscaler_cluster_config() -> Any:
    """The autoscaler's node types, or None where none runs (``ray._private.state``)."""
    return ray._private.state.state.get_cluster_config()


def router_node_id(router: Any) -> str | None:
    """The node of a Serve request router's caller (``LocalityMixin._self_node_id``)."""
    return router._self_node_id


# Serve takes an explicit deployment ``version`` only from internal callers.
VERSIONED_DEPLOYMENT_OPTIONS = {"_internal": True}


def placement_group_id(group: Any) -> str:
    """A placement group's id as hex, to travel as JSON (``PlacementGroup.id``)."""
    return group.id.hex()


def join_placement_group(gcs_address: str | None, group_id: str) -> Any:
    """In a process outside Ray (an engine host), connect to the cluster and return the
    placement group ``group_id`` (hex) for vLLM's Ray executor (untested on GPUs)."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    if not ray.is_initialized():
        ray.init(address=gcs_address or "auto", log_to_driver=False)
    return PlacementGroup(PlacementGroupID(bytes.fromhex(group_id)))


_ROUTER_PICKLING = threading.RLock()


def serialize_request_routers_one_at_a_time() -> None:
    """Serve pickles a deployment's request router (its default one too) by registering and
    unregistering the router's module in cloudpickle's process-wide by-value registry
    (``RequestRouterConfig._serialize_request_router_cls``): two deployments built at once
    in one process break each other's registration. One lock around it, per process."""
    from ray.serve.config import RequestRouterConfig

    original = RequestRouterConfig._serialize_request_router_cls
    if getattr(original, "one_at_a_time", False):
        return

    def serialize(self: Any) -> None:
        with _ROUTER_PICKLING:
            original(self)

    serialize.one_at_a_time = True  # type: ignore[attr-defined]
    RequestRouterConfig._serialize_request_router_cls = serialize  # type: ignore[method-assign]
