"""Every use of a Ray or Serve private API, in one place.

Each function names the private thing it relies on; ``tests/unit/test_ray_compat.py``
pins the behaviour the project needs from it, so a Ray upgrade that moves one fails
there first. Public Ray APIs are used directly everywhere else.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import ray
from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR, WORKER_PROCESS_TYPE_IDLE_WORKER

# Serve's controller acts on a scale from zero in three steps a control loop apart (the
# autoscaling decision, the replica's creation, seeing it ready) and sleeps 0.1 s between
# loops by default. At 0.05 s a cold start on the 2-core machine took 0.1 to 0.15 s less
# (``benchmarks/cold_start.py``); the idle controller's CPU went from 0.044 to 0.088
# CPU-seconds a second with 10 models. The controller reads it from the environment of the
# Ray node it starts on, so it is set before Ray starts: by ``sllm-ray serve``, the tests
# and the benchmarks (``set_serve_node_env``), and in the image and the cluster configs.
SERVE_NODE_ENV = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.05"}


def set_serve_node_env() -> None:
    """``SERVE_NODE_ENV`` into this process's environment, where it does not say otherwise:
    the Ray node this process starts passes it on to Serve's controller."""
    for name, value in SERVE_NODE_ENV.items():
        os.environ.setdefault(name, value)


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


_DEPLOY_PICKLING = threading.RLock()


def serialize_deploy_callables_one_at_a_time() -> None:
    """Serve pickles a deployment's request router and autoscaling policy (its default ones
    too) by registering and unregistering their modules in cloudpickle's process-wide
    by-value registry (``RequestRouterConfig._serialize_request_router_cls``,
    ``AutoscalingPolicy.serialize_policy``): two deployments built at once in one process
    break each other's registration. One lock around both, per process."""
    from ray.serve.config import AutoscalingPolicy, RequestRouterConfig

    for cls, name in (
        (RequestRouterConfig, "_serialize_request_router_cls"),
        (AutoscalingPolicy, "serialize_policy"),
    ):
        original = getattr(cls, name)
        if getattr(original, "one_at_a_time", False):
            continue

        def serialize(self: Any, original: Any = original) -> None:
            with _DEPLOY_PICKLING:
                original(self)

        serialize.one_at_a_time = True  # type: ignore[attr-defined]
        setattr(cls, name, serialize)


# Serve's controller makes each deployment's replica actor class once per ``DeploymentInfo``
# (``DeploymentInfo.actor_def``) but copies the info on every autoscaling decision
# (``DeploymentState.autoscale``), and a copy drops the class. So each scale from zero makes
# a new class, which Ray exports again when the replica is created: it pickles the class,
# disassembles its methods for a collision check and stores it in the GCS, about 27 ms of
# the controller's CPU on a quiet 2-core node, within a control loop that decides no other
# model's scale-up meanwhile (loops of up to 0.2 s in a burst). The class depends only on
# the actor's name (Serve's replica class under it), so one per name may be kept.
REPLICA_CLASSES_KEPT = 1024  # deployments whose replica class the controller keeps


def keep_replica_actor_classes() -> None:
    """In Serve's controller: have ``DeploymentInfo.actor_def`` hand out one actor class per
    actor name, kept across copies of the info (the ``REPLICA_CLASSES_KEPT`` used last)."""
    from ray.serve._private.deployment_info import DeploymentInfo

    original = DeploymentInfo.actor_def
    if getattr(original.fget, "kept_per_name", False):
        return
    classes: OrderedDict[str, Any] = OrderedDict()

    def actor_def(self: Any) -> Any:
        if self._cached_actor_def is None:
            kept = classes.get(self.actor_name)
            self._cached_actor_def = kept if kept is not None else original.fget(self)
        classes[self.actor_name] = self._cached_actor_def
        classes.move_to_end(self.actor_name)  # the most recently used
        while len(classes) > REPLICA_CLASSES_KEPT:
            classes.popitem(last=False)
        return self._cached_actor_def

    actor_def.kept_per_name = True  # type: ignore[attr-defined]
    DeploymentInfo.actor_def = property(actor_def)  # type: ignore[method-assign]


# What a Serve replica's worker imports to run it, lazily, on a replica's start: Serve's
# replica code (most of it); Serve's controller, whose handle the replica looks up (a
# lookup imports the actor class's module); anyio's asyncio backend (Serve sets its thread
# limiter); Ray's token-auth gRPC interceptors (a replica's channels and server).
SERVE_REPLICA_MODULES = (
    "ray.serve._private.replica",
    "ray.serve._private.controller",
    "anyio._backends._asyncio",
    "ray._private.authentication.grpc_authentication_client_interceptor",
    "ray._private.authentication.grpc_authentication_server_interceptor",
)


def serve_controller() -> Any:
    """Serve's controller (ValueError while Serve is not running)."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


def serialization_context() -> Any:
    """This worker's serializer for its job, built on first use (``Worker.get_serialization_context``)."""
    return ray._private.worker.global_worker.get_serialization_context()


# A worker whose runtime environment sets this variable ("module.function") calls that
# function once it has started, before it takes work: Ray's ``worker_process_setup_hook``
# as Ray writes it for workers (the runtime-env field itself is read only at ``ray.init``).
WORKER_SETUP_HOOK_ENV_VAR = WORKER_PROCESS_SETUP_HOOK_ENV_VAR

# A Ray worker titles its process so while it runs no task or actor; before it has
# connected it is its start script.
IDLE_WORKER_TITLE = WORKER_PROCESS_TYPE_IDLE_WORKER
WORKER_SCRIPT = "default_worker.py"


def is_idle_worker(name: str, cmdline: list[str]) -> bool:
    """Whether a process (``psutil`` name and command line) is a Ray worker that runs no
    task or actor yet: idle, or still starting."""
    return name == IDLE_WORKER_TITLE or any(arg.endswith(WORKER_SCRIPT) for arg in cmdline[:3])


_raylets: dict[str, Any] = {}  # node id -> the raylet's gRPC stub


def _raylet(node_id: str) -> Any:
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import node_manager_pb2_grpc

    if node_id not in _raylets:
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id and n["Alive"])
        address = f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
        channel = init_grpc_channel(address, asynchronous=True)
        _raylets[node_id] = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
    return _raylets[node_id]


async def prestart_workers(
    node_id: str, job_id: str, serialized_runtime_env: str, count: int, keep_alive_s: int
) -> None:
    """Have ``node_id``'s raylet start ``count`` idle Python workers of job ``job_id`` (hex)
    with that runtime environment, kept from idle killing for ``keep_alive_s`` (the raylet's
    ``PrestartWorkers`` RPC; Ray has no public API for it). An actor of that job and
    environment created on the node takes one instead of waiting for a worker process.
    The raylet starts at most as many at once as it may start workers concurrently (its
    CPUs) and drops the rest."""
    from ray.core.generated import common_pb2, node_manager_pb2, runtime_environment_pb2

    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON,
        job_id=bytes.fromhex(job_id),
        runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(
            serialized_runtime_env=serialized_runtime_env
        ),
        keep_alive_duration_secs=keep_alive_s,
        num_workers=count,
    )
    try:
        await _raylet(node_id).PrestartWorkers(request, timeout=5)
    except Exception:
        _raylets.pop(node_id, None)  # a restarted raylet has a new port
        raise
