"""What a model's Serve deployment asks of Ray: a placement group per replica for engines
with several workers, a node preference (placement's choice) otherwise; the
autoscaling policy Serve's controller loads."""

from __future__ import annotations

from sllm_ray.config import ModelConfig, ResourceConfig, engine_workers
from sllm_ray.engine.replica_workers import runtime_env
from sllm_ray.serving.model_server import build_model_deployment


def test_workers_are_tensor_times_pipeline_parallel_size() -> None:
    assert engine_workers({}) == 1
    assert engine_workers({"tensor_parallel_size": 4, "pipeline_parallel_size": 2}) == 8


def test_bundles_share_the_replicas_resources_one_per_worker() -> None:
    gpus = ResourceConfig(num_cpus=4, num_gpus=2, memory_bytes=10, custom={"a100": 1})
    assert gpus.placement_bundles(2) == [{"CPU": 2, "GPU": 1, "memory": 10, "a100": 1}, {"CPU": 2, "GPU": 1}]
    assert ResourceConfig(num_cpus=2).placement_bundles(2) == [{"CPU": 1}, {"CPU": 1}]  # CPU bundles here


def test_a_multi_worker_engine_gets_a_placement_group_packed_on_one_node() -> None:
    config = ModelConfig(
        model="m",
        model_source="/m",
        engine_kwargs={"tensor_parallel_size": 2},
        resources={"num_cpus": 2, "num_gpus": 2},
    )
    deployment = build_model_deployment(config, "sllm", preferred_node="n1")._bound_deployment
    replica = deployment._replica_config
    assert replica.placement_group_bundles == [{"CPU": 1, "GPU": 1}, {"CPU": 1, "GPU": 1}]
    assert replica.placement_group_strategy == "STRICT_PACK"
    # The replica sits in the first bundle; no node preference (Serve takes none for groups).
    assert deployment.ray_actor_options == {"num_cpus": 1, "num_gpus": 1, "runtime_env": runtime_env("sllm")}


def test_a_single_worker_engine_is_steered_with_a_fallback_to_any_node() -> None:
    config = ModelConfig(model="m", model_source="/m")
    deployment = build_model_deployment(config, "sllm", preferred_node="n1")._bound_deployment
    assert deployment._replica_config.placement_group_bundles is None
    assert deployment.ray_actor_options["label_selector"] == {"ray.io/node-id": "n1"}
    # Its worker may be one started ahead of demand, Serve's replica code imported.
    assert deployment.ray_actor_options["runtime_env"] == runtime_env("sllm")
    assert deployment.ray_actor_options["fallback_strategy"] == [{"label_selector": {}}]
    plain = build_model_deployment(config, "sllm")._bound_deployment
    assert "label_selector" not in plain.ray_actor_options


def test_a_deployment_names_sllm_rays_policy_which_serve_can_load() -> None:
    from sllm_ray.control.autoscaling_policy import QueueLengthPolicy

    deployment = build_model_deployment(ModelConfig(model="m", model_source="/m"), "sllm")._bound_deployment
    policy = deployment._deployment_config.autoscaling_config.policy
    assert not policy.is_default_policy_function()
    assert policy.get_policy().__name__ == QueueLengthPolicy.__name__  # what the controller unpickles
