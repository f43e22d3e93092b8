"""Engine memory derived from what a replica reserves, and the fit check at registration."""

from __future__ import annotations

import pytest

from sllm_ray.config import (
    CPU_KV_CACHE_BYTES,
    FitError,
    MiB,
    ModelConfig,
    effective_engine_kwargs,
    fit_problem,
    gpu_memory_utilization,
    position_limit,
)

GiB = 1024**3


def _model(engine_kwargs: dict | None = None, **resources: object) -> ModelConfig:
    return ModelConfig(
        model="m", model_source="org/m", engine_kwargs=engine_kwargs or {}, resources=resources
    )


def test_a_cpu_model_without_a_kv_cache_size_gets_the_safe_default() -> None:
    kwargs = effective_engine_kwargs(_model({"max_model_len": 512, "dtype": "float32"}), sleepers_per_node=2)
    assert kwargs == {"max_model_len": 512, "dtype": "float32", "kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}
    assert 256 * MiB == CPU_KV_CACHE_BYTES


def test_a_cpu_models_kv_cache_is_half_its_memory_reservation() -> None:
    kwargs = effective_engine_kwargs(_model(memory_bytes=2 * GiB), sleepers_per_node=2)
    assert kwargs == {"kv_cache_memory_bytes": GiB}


@pytest.mark.parametrize("given", [{"kv_cache_memory_bytes": 64 * MiB}, {"gpu_memory_utilization": 0.3}])
def test_a_given_memory_bound_is_kept(given: dict) -> None:
    model = _model(given, memory_bytes=2 * GiB)
    assert effective_engine_kwargs(model, 2) == given
    assert effective_engine_kwargs(_model(given, num_gpus=1), 2) == given


def test_the_user_config_is_not_changed() -> None:
    model = _model({"max_model_len": 512})
    effective_engine_kwargs(model, 2)
    assert model.engine_kwargs == {"max_model_len": 512}


@pytest.mark.parametrize(
    ("num_gpus", "engine_kwargs", "sleepers", "expected"),
    [
        (1, {}, 0, 0.9),  # a whole GPU, nothing asleep: vLLM's own default
        (1, {}, 2, 0.84),  # room for two sleeping engines
        (0.5, {}, 2, 0.39),
        (0.25, {}, 1, 0.195),
        (2, {}, 2, 0.84),  # one worker uses one GPU however many the replica holds
        (2, {"tensor_parallel_size": 2}, 2, 0.84),  # a GPU per worker
        (1, {"tensor_parallel_size": 2}, 0, 0.45),  # half a GPU per worker
    ],
)
def test_gpu_memory_utilization_follows_the_gpu_share(
    num_gpus: float, engine_kwargs: dict, sleepers: int, expected: float
) -> None:
    kwargs = effective_engine_kwargs(_model(engine_kwargs, num_gpus=num_gpus), sleepers)
    assert kwargs == {**engine_kwargs, "gpu_memory_utilization": expected}
    assert "kv_cache_memory_bytes" not in kwargs


def test_a_gpu_share_too_small_for_the_sleepers_is_refused() -> None:
    with pytest.raises(FitError) as caught:
        gpu_memory_utilization(0.1, sleepers_per_node=3)
    assert caught.value.param == "resources.num_gpus" and "engine_sleepers_per_node" in caught.value.message


CPU_NODE = {"CPU": 8.0, "memory": 16 * GiB}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0, "memory": 32 * GiB}


@pytest.mark.parametrize(
    ("model", "shapes", "param"),
    [
        (_model(), [CPU_NODE], None),
        (_model(), [], None),  # nothing known of the nodes: not refused
        (_model(num_gpus=1), [CPU_NODE], "resources.num_gpus"),
        (_model(num_gpus=1), [CPU_NODE, GPU_NODE], None),
        (_model(num_gpus=2), [GPU_NODE, GPU_NODE], "resources.num_gpus"),  # one replica, one node
        (_model(num_cpus=16), [CPU_NODE], "resources.num_cpus"),
        (_model(memory_bytes=20 * GiB), [CPU_NODE], "resources.memory_bytes"),
        (_model({"kv_cache_memory_bytes": 20 * GiB}), [CPU_NODE], "engine_kwargs.kv_cache_memory_bytes"),
        (_model({"kv_cache_memory_bytes": 20 * GiB}, num_gpus=1), [GPU_NODE], None),  # GPU memory
        (_model(memory_bytes=20 * GiB), [{"CPU": 8.0}], None),  # no memory reported
        # Each need met by some node, all of them by none.
        (
            _model(num_gpus=1, memory_bytes=20 * GiB),
            [GPU_NODE | {"memory": 8 * GiB}, CPU_NODE | {"memory": 64 * GiB}],
            "resources",
        ),
    ],
)
def test_fit_problem_names_the_field(model: ModelConfig, shapes: list, param: str | None) -> None:
    problem = fit_problem(model, effective_engine_kwargs(model, 2), shapes)
    assert (problem.param if problem else None) == param


def test_fit_problem_says_how_big_the_largest_node_is() -> None:
    model = _model(memory_bytes=20 * GiB)
    problem = fit_problem(model, {}, [CPU_NODE])
    assert problem is not None
    assert (
        problem.message
        == "resources.memory_bytes asks for 20.00 GiB memory; the largest node has 16.00 GiB memory"
    )


@pytest.mark.parametrize(
    ("hf_config", "limit"),
    [
        ({"max_position_embeddings": 2048}, 2048),
        ({"n_positions": 1024, "max_position_embeddings": 4096}, 1024),  # the smallest, as vLLM
        ({"max_position_embeddings": 4096, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, 16384),
        ({"max_position_embeddings": 2048, "rope_parameters": {"rope_type": "default"}}, 2048),
        ({"text_config": {"max_position_embeddings": 8192}, "max_position_embeddings": 512}, 8192),
        ({"hidden_size": 128}, None),
        ({"max_position_embeddings": True}, None),
    ],
)
def test_position_limit(hf_config: dict, limit: int | None) -> None:
    assert position_limit(hf_config) == limit
