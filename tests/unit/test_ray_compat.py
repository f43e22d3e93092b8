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
