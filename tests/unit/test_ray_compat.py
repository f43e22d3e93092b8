"""What sllm_ray relies on in Ray's and Serve's private APIs (``sllm_ray/ray_compat.py``),
checked against the installed Ray without starting it: an upgrade that moves one fails here."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys

import pytest
from ray import serve

from sllm_ray import ray_compat


class _Model:
    def __call__(self) -> int:
        return 1


def test_a_deployment_version_is_taken_only_from_internal_callers() -> None:
    deployment = serve.deployment(_Model)
    with pytest.raises(ValueError, match="version"):
        deployment.options(version="fingerprint")
    assert deployment.options(version="fingerprint", **ray_compat.VERSIONED_DEPLOYMENT_OPTIONS).version == (
        "fingerprint"
    )


def test_the_request_routers_locality_mixin_keeps_the_callers_node() -> None:
    from ray.serve._private.request_router.request_router import LocalityMixin

    assert "self._self_node_id = self_node_id" in inspect.getsource(LocalityMixin)

    class Router:
        _self_node_id = "node-1"

    assert ray_compat.router_node_id(Router()) == "node-1"


def test_per_node_resources_and_the_autoscaler_config_are_there_to_read() -> None:
    import ray._private.state as state

    assert callable(state.available_resources_per_node)
    assert callable(state.state.get_cluster_config)


def test_a_placement_group_id_round_trips_through_json() -> None:
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    group = PlacementGroup(PlacementGroupID.from_random())
    hex_id = ray_compat.placement_group_id(group)
    assert isinstance(hex_id, str)
    # What join_placement_group rebuilds in the engine host.
    assert PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id))).id == group.id


def test_the_raylet_prestarts_workers_of_a_job_and_runtime_env_on_request() -> None:
    from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

    fields = {f.name for f in node_manager_pb2.PrestartWorkersRequest.DESCRIPTOR.fields}
    assert {"language", "job_id", "runtime_env_info", "keep_alive_duration_secs", "num_workers"} <= fields
    assert "PrestartWorkers" in inspect.getsource(node_manager_pb2_grpc.NodeManagerServiceStub)


def test_a_worker_runs_the_setup_hook_its_runtime_env_names() -> None:
    from ray._private.workers import default_worker

    source = inspect.getsource(default_worker)
    assert "WORKER_PROCESS_SETUP_HOOK_ENV_VAR" in source and "load_and_execute_setup_hook(" in source
    assert ray_compat.WORKER_SETUP_HOOK_ENV_VAR == "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"
    assert all(importlib.util.find_spec(m) is not None for m in ray_compat.SERVE_REPLICA_MODULES)
    # The serializer the hook builds ahead: per job, made on first use.
    from ray._private.worker import Worker

    assert "serialization_context_map" in inspect.getsource(Worker.get_serialization_context)


def test_serves_controller_takes_its_loop_interval_from_the_nodes_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (name, value), *_ = ray_compat.SERVE_NODE_ENV.items()
    monkeypatch.delenv(name, raising=False)
    ray_compat.set_serve_node_env()
    probe = "from ray.serve._private import constants; print(constants.CONTROL_LOOP_INTERVAL_S)"
    read = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert float(read.stdout) == float(value)
    monkeypatch.setenv(name, "0.2")  # an operator's own setting stays
    ray_compat.set_serve_node_env()
    assert os.environ[name] == "0.2"


def test_serves_controller_keeps_one_replica_class_per_actor_name() -> None:
    # In a fresh interpreter: the patch is process-wide, as it is in the controller.
    probe = """
from copy import copy
from ray.serve._private.deployment_info import DeploymentInfo
from sllm_ray import ray_compat

def info(name):
    return DeploymentInfo(None, None, start_time_ms=0, deployer_job_id="job", actor_name=name)

first = info("ServeReplica:app:a")
assert copy(first).actor_def is not first.actor_def  # Serve's copies drop the class
ray_compat.keep_replica_actor_classes()
ray_compat.keep_replica_actor_classes()  # once per deployment: the second call changes nothing
kept = info("ServeReplica:app:a").actor_def
assert copy(first).actor_def is kept and info("ServeReplica:app:a").actor_def is kept
assert info("ServeReplica:app:b").actor_def is not kept
assert kept.__ray_metadata__.class_name == "ServeReplica:app:a"
ray_compat.REPLICA_CLASSES_KEPT = 1
info("ServeReplica:app:c").actor_def  # the least recently used name (a) goes
assert info("ServeReplica:app:a").actor_def is not kept
"""
    subprocess.run([sys.executable, "-c", probe], check=True)


def test_serve_pickles_a_deployments_router_and_policy_one_at_a_time() -> None:
    import threading

    from ray.serve.config import AutoscalingPolicy, RequestRouterConfig

    from sllm_ray.config import AUTOSCALING_POLICY_PATH as POLICY

    ray_compat.serialize_deploy_callables_one_at_a_time()
    built: list[object] = []
    builds = [
        threading.Thread(target=lambda: built.append(AutoscalingPolicy(policy_function=POLICY))),
        threading.Thread(target=lambda: built.append(RequestRouterConfig())),
    ]
    with ray_compat._DEPLOY_PICKLING:
        for build in builds:
            build.start()
        for build in builds:
            build.join(timeout=0.3)
        assert not built  # both wait for the lock
    for build in builds:
        build.join(timeout=30)
    assert len(built) == 2
