"""AppConfig / ModelConfig validation and the Serve options derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sllm_ray.config import (
    AUTOSCALING_POLICY_PATH,
    AppConfig,
    AutoscalingConfig,
    ModelConfig,
    ModelUpdate,
    ResourceConfig,
)

REPO = Path(__file__).resolve().parents[2]


def test_defaults_make_a_serverless_model() -> None:
    m = ModelConfig(model="m", model_source="org/m")
    assert m.autoscaling.min_replicas == 0
    assert m.deployment_name == "model:m"
    serve_cfg = m.autoscaling.to_serve()
    assert serve_cfg["min_replicas"] == 0 and "initial_replicas" not in serve_cfg
    assert serve_cfg["downscale_delay_s"] == serve_cfg["downscale_to_zero_delay_s"] == 300
    assert serve_cfg["upscale_delay_s"] == 0
    assert AppConfig().request_wait_timeout_s == 120


def test_keep_alive_maps_to_downscale_delays() -> None:
    a = AutoscalingConfig(min_replicas=1, max_replicas=3, keep_alive_s=42, target_ongoing_requests=2)
    cfg = a.to_serve()
    assert cfg == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 42,
        "downscale_to_zero_delay_s": 42,
        "look_back_period_s": 15.0,
        "metrics_interval_s": 0.1,
        "policy": {"policy_function": AUTOSCALING_POLICY_PATH},
    }


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"model": "m", "model_source": "x", "autoscaling": {"min_replicas": 3, "max_replicas": 1}},
            "must not exceed",
        ),
        ({"model": "m", "model_source": "x", "autoscaling": {"keep_alive_s": -1}}, "greater than or equal"),
        ({"model": "m", "model_source": "x", "unknown": 1}, "Extra inputs"),
        (
            {"model": "m", "model_source": "x", "autoscaling": {"look_back_period_s": 0.1}},
            "must exceed demand_push_interval_s",
        ),
        ({"model": "bad#name", "model_source": "x"}, "model names"),
        ({"model": "", "model_source": "x"}, "model names"),
        ({"model": "m", "model_source": "  "}, "must not be empty"),
        ({"model": "m"}, "model_source"),
        ({"model": "m", "model_source": "x", "resources": {"num_cpus": -1}}, "greater than or equal"),
    ],
)
def test_invalid_model_configs_are_rejected(data: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ModelConfig.model_validate(data)


INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        # NaN and infinities: pydantic would store them as null, a record that never loads again.
        ({"autoscaling": {"keep_alive_s": INF}}, "finite number"),
        ({"autoscaling": {"target_ongoing_requests": NAN}}, "finite number"),
        ({"request_wait_timeout_s": INF}, "finite number"),
        ({"resources": {"num_cpus": NAN}}, "finite number"),
        ({"resources": {"custom": {"zone": INF}}}, "finite number"),
        ({"engine_kwargs": {"gpu_memory_utilization": NAN}}, "not a finite number"),
        ({"engine_kwargs": {"hf_overrides": {"rope_theta": INF}}}, "not a finite number"),
        ({"engine_kwargs": {"seed": 10**30}}, "not a finite number"),
        ({"engine_kwargs": {"x": b"bytes"}}, "not a JSON value"),
        # Sane upper bounds, where Serve would take the config and fail on it later.
        ({"autoscaling": {"max_replicas": 10**6}}, "less than or equal to 1000"),
        ({"autoscaling": {"max_replicas": 1e29}}, "max_replicas"),
        ({"autoscaling": {"demand_push_interval_s": 1e-9}}, "greater than or equal to 0.01"),
        ({"autoscaling": {"keep_alive_s": 1e12}}, "less than or equal"),
        ({"max_ongoing_requests": 10**9}, "less than or equal"),
        ({"resources": {"num_gpus": 1e6}}, "less than or equal"),
        ({"engine_kwargs": {"max_model_len": -1}}, "max_model_len must be a number from 1"),
        ({"engine_kwargs": {"max_model_len": "512"}}, "max_model_len must be a number"),
        ({"engine_kwargs": {"tensor_parallel_size": 0}}, "tensor_parallel_size"),
        ({"request_limits": {"n": 0}}, "greater than or equal"),
        ({"request_limits": {"unknown": 1}}, "Extra inputs"),
        # Names that URL normalisation would turn into another name.
        ({"model": "a/../b"}, "path segments"),
        ({"model": "a/./b"}, "path segments"),
        ({"model": "a//b"}, "path segments"),
        ({"model": "a/"}, "path segments"),
        # The admin API's sub-resources of a model: never part of a model's name.
        ({"model": "a/adapters"}, "adapters or warm path segment"),
        ({"model": "a/adapters/b"}, "adapters or warm path segment"),
        ({"model": "a/warm"}, "adapters or warm path segment"),
    ],
)
def test_numbers_and_names_are_bounded(settings: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ModelConfig.model_validate({"model": "m", "model_source": "x", **settings})


def test_a_first_segment_may_be_a_sub_resources_name() -> None:
    for name in ("warm", "adapters", "org/warm-up"):
        assert ModelConfig.model_validate({"model": name, "model_source": "x"}).model == name


def test_a_valid_config_reads_back_as_itself() -> None:
    config = ModelConfig.model_validate(
        {
            "model": "org/m.v1:2",
            "model_source": "x",
            "engine_kwargs": {"max_model_len": 512, "hf_overrides": {"a": [1.5, None, True]}},
            "autoscaling": {"keep_alive_s": 0.5},
            "request_limits": {"n": 4},
        }
    )
    assert ModelConfig.model_validate_json(config.model_dump_json()) == config


def test_duplicate_model_names_are_rejected() -> None:
    m = {"model": "m", "model_source": "x"}
    with pytest.raises(ValidationError, match="listed twice"):
        AppConfig.model_validate({"models": [m, m]})


def test_resources_become_ray_actor_options() -> None:
    r = ResourceConfig(num_cpus=2, num_gpus=1, memory_bytes=1024, custom={"zone_a": 1})
    assert r.to_ray_actor_options() == {
        "num_cpus": 2,
        "num_gpus": 1,
        "memory": 1024,
        "resources": {"zone_a": 1},
    }
    assert ResourceConfig().to_ray_actor_options() == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_patch_merges_nested_settings_and_replaces_engine_kwargs() -> None:
    current = ModelConfig(
        model="m",
        model_source="org/m",
        engine_kwargs={"max_model_len": 512, "enforce_eager": True},
        autoscaling={"max_replicas": 3, "keep_alive_s": 60},
    )
    patched = ModelUpdate(autoscaling={"keep_alive_s": 5}).apply(current)
    assert patched.autoscaling.keep_alive_s == 5 and patched.autoscaling.max_replicas == 3
    assert patched.engine_fingerprint() == current.engine_fingerprint()  # applies in place

    rolled = ModelUpdate(engine_kwargs={"max_model_len": 256}).apply(current)
    assert rolled.engine_kwargs == {"max_model_len": 256}
    assert rolled.engine_fingerprint() != current.engine_fingerprint()


@pytest.mark.parametrize(
    "patch",
    [{"autoscaling": {"min_replicas": 5}}, {"max_queued_requests": 0}, {"model": "renamed"}, {"x": 1}],
)
def test_invalid_patches_are_rejected(patch: dict) -> None:
    current = ModelConfig(model="m", model_source="org/m")
    with pytest.raises(ValidationError):
        ModelUpdate.model_validate(patch).apply(current)


def test_a_patch_fixes_stored_fields_that_no_longer_validate() -> None:
    stored = {"model": "m", "model_source": "org/m", "autoscaling": {"keep_alive_s": None, "max_replicas": 2}}
    fixed = ModelUpdate(autoscaling={"keep_alive_s": 30}, request_limits={"n": 2}).apply(stored)
    assert fixed.autoscaling.keep_alive_s == 30 and fixed.autoscaling.max_replicas == 2
    assert fixed.request_limits.n == 2 and fixed.request_limits.best_of == 16


def test_shipped_serve_yaml_is_valid() -> None:
    doc = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(doc)
    (app,) = doc["applications"]
    assert app["import_path"] == "sllm_ray.builder:build_app"
    config = AppConfig.model_validate(app["args"])
    assert [m.model for m in config.models] == ["tiny-llama"]


def test_cluster_yaml_passes_rays_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))


def test_two_ingress_replicas_where_the_node_has_the_cpus_for_them() -> None:
    from sllm_ray.builder import ingress_replicas

    assert ingress_replicas(AppConfig(), cpus=2) == 1
    assert ingress_replicas(AppConfig(), cpus=8) == 2
    assert ingress_replicas(AppConfig(ingress_replicas=3), cpus=2) == 3
