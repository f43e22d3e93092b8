"""Whether the app can serve a cold start in the documented time. Pure logic.

Ready means: the model manager has brought Serve in line with the registry (every
registered model is deployed, so requests are routed) and every alive node's engine host
pool is ready to give a replica an engine host without a vLLM import. The ingress serves
it at ``GET /ready`` (200 or 503), for Kubernetes readiness probes and ``make run``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def pool_ready(pool: Mapping[str, Any]) -> bool:
    """A node's pool (``HostPool.status``): ``ready`` is True once the pool can hand out
    engine hosts (its launcher is prepared)."""
    return pool.get("ready") is True


DRAINING = "the app is draining before a shutdown: new requests are refused"


def readiness(reconciled: bool, nodes: Sequence[Mapping[str, Any]], draining: bool = False) -> dict[str, Any]:
    """``GET /ready``'s body from the manager's state and ``ModelManager.nodes()``:
    ``ready``, the per-node pool readiness and, when not ready, what is missing. A
    draining app is not ready, whatever else holds (``control/drain.py``)."""
    pools = {node["node_id"]: pool_ready(node.get("engine_hosts") or {}) for node in nodes}
    waiting = [DRAINING] if draining else []
    if not reconciled:
        waiting.append("the model manager is still deploying the registered models")
    if not pools:
        waiting.append("no node has an engine host pool yet")
    waiting += [
        f"the engine host pool on node {node_id} is not ready" for node_id, ok in pools.items() if not ok
    ]
    return {
        "ready": not waiting,
        "registry_reconciled": reconciled,
        "pools_ready": pools,
        "waiting_for": waiting,
    }
