"""ServerlessLLM's registration JSON, as its docs and default config give it."""

from __future__ import annotations

import pytest

from sllm_ray.api import sllm_compat
from sllm_ray.config import ModelConfig
from sllm_ray.errors import UnprocessableError

# ServerlessLLM's `sllm deploy` default config (sllm/cli/default_config.json) with a model
# filled in, as `sllm deploy --model facebook/opt-1.3b` sends it.
SLLM_DEFAULT = {
    "model": "facebook/opt-1.3b",
    "backend": "vllm",
    "num_gpus": 1,
    "auto_scaling_config": {
        "metric": "concurrency",
        "target": 1,
        "min_instances": 0,
        "max_instances": 10,
        "keep_alive": 0,
    },
    "backend_config": {
        "pretrained_model_name_or_path": "",
        "device_map": "auto",
        "dtype": "float16",
        "hf_model_class": "AutoModelForCausalLM",
    },
}


def test_register_translates_their_default_config() -> None:
    body = sllm_compat.register_body(SLLM_DEFAULT)
    config = ModelConfig.model_validate(body)
    assert config.model == config.model_source == "facebook/opt-1.3b"
    assert config.engine_kwargs == {"dtype": "float16"}
    assert config.resources.num_gpus == 1
    a = config.autoscaling
    assert (a.min_replicas, a.max_replicas, a.target_ongoing_requests, a.keep_alive_s) == (0, 10, 1, 0)


def test_older_torch_dtype_and_vllm_arguments_carry_over() -> None:
    body = sllm_compat.register_body(
        {
            "model": "m",
            "backend_config": {
                "pretrained_model_name_or_path": "org/m",
                "torch_dtype": "bfloat16",
                "tensor_parallel_size": 2,
            },
        }
    )
    assert body["model_source"] == "org/m"
    assert body["engine_kwargs"] == {"dtype": "bfloat16", "tensor_parallel_size": 2}


def test_register_with_only_a_model_name() -> None:
    assert sllm_compat.register_body({"model": "org/m"}) == {
        "model": "org/m",
        "model_source": "org/m",
        "engine_kwargs": {},
    }


def test_update_only_touches_given_sections() -> None:
    name, patch = sllm_compat.update_patch({"model": "m", "auto_scaling_config": {"max_instances": 2}})
    assert (name, patch) == ("m", {"autoscaling": {"max_replicas": 2}})
    _, patch = sllm_compat.update_patch({"model": "m", "backend_config": {"max_model_len": 256}})
    assert patch == {"engine_kwargs": {"max_model_len": 256}}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"model": ""},
        {"model": "m", "backend": "transformers"},
        {"model": "m", "auto_scaling_config": {"metric": "rps"}},
        {"model": "m", "auto_scaling_config": {"min_instance": 1}},
        # A string where an object belongs (was an AttributeError, a 500).
        {"model": "m", "auto_scaling_config": "fast"},
        {"model": "m", "backend_config": "org/m"},
        {"model": "m", "backend_config": [["a", 1]]},  # dict() took it: "dictionary update sequence"
        {"model": ["m"]},
        {"model": "m", "num_gpus": "one"},
        {"model": "m", "auto_scaling_config": {"max_instances": "many"}},
        {"model": "m", "unknown_field": 1},  # unknown fields are refused, as by the admin API
    ],
)
def test_unsupported_input_is_422(body: dict) -> None:
    with pytest.raises(UnprocessableError):
        sllm_compat.register_body(body)
    with pytest.raises(UnprocessableError):
        sllm_compat.update_patch(body)


def test_delete_takes_a_model_or_its_adapters() -> None:
    assert sllm_compat.deleted({"model": "m"}) == ("m", None)
    # `sllm delete m --lora-adapters a b`, and with paths (`a=/p`): names either way.
    assert sllm_compat.deleted({"model": "m", "lora_adapters": ["a", "b"]}) == ("m", ["a", "b"])
    assert sllm_compat.deleted({"model": "m", "lora_adapters": {"a": "/p"}}) == ("m", ["a"])
    for body in ({}, {"model": 3}, {"model": "m", "force": True}, {"model": "m", "lora_adapters": 3}):
        with pytest.raises(UnprocessableError):
            sllm_compat.deleted(body)


def test_lora_settings_as_their_cli_sends_them() -> None:
    """`sllm deploy --enable-lora --lora-adapters a=/p ...` puts both in backend_config."""
    body = {
        **SLLM_DEFAULT,
        "num_gpus": 0,
        "backend_config": {
            **SLLM_DEFAULT["backend_config"],
            "enable_lora": True,
            "max_lora_rank": 8,
            "lora_adapters": {"a": "/models/lora-a"},
        },
    }
    config = ModelConfig.model_validate(sllm_compat.register_body(body))
    assert config.engine_kwargs == {"dtype": "float16", "enable_lora": True, "max_lora_rank": 8}
    assert [(a.adapter, a.source) for a in config.adapters] == [("a", "/models/lora-a")]
    assert sllm_compat.adapters(body) == ("facebook/opt-1.3b", [{"adapter": "a", "source": "/models/lora-a"}])
    # An update of adapters alone leaves the engine arguments alone.
    name, patch = sllm_compat.update_patch({"model": "m", "backend_config": {"lora_adapters": {"b": "/q"}}})
    assert (name, patch) == ("m", {})
    with pytest.raises(UnprocessableError) as info:
        sllm_compat.register_body({"model": "m", "backend_config": {"lora_adapters": ["a"]}})
    assert info.value.param == "backend_config.lora_adapters"


def test_precision_is_refused_naming_it() -> None:
    with pytest.raises(UnprocessableError, match="bitsandbytes") as info:
        sllm_compat.register_body({"model": "m", "backend_config": {"precision": "int8"}})
    assert info.value.param == "backend_config.precision"


def test_out_of_bounds_instances_are_refused_by_our_configs_bounds() -> None:
    with pytest.raises(UnprocessableError, match="max_instances"):  # was a 500 from Serve
        sllm_compat.register_body({"model": "m", "auto_scaling_config": {"max_instances": 1e29}})
    bounds = ModelConfig.model_json_schema()["$defs"]["AutoscalingConfig"]["properties"]
    limit = bounds["max_replicas"]["maximum"]
    assert bounds["min_replicas"]["maximum"] == limit
    for their in ("max_instances", "min_instances"):
        with pytest.raises(UnprocessableError, match=rf"{their}: Input should be less than or equal to"):
            sllm_compat.register_body({"model": "m", "auto_scaling_config": {their: limit + 1}})
    body = sllm_compat.register_body(
        {"model": "m", "auto_scaling_config": {"min_instances": limit, "max_instances": limit}}
    )
    scaling = ModelConfig.model_validate(body).autoscaling
    assert (scaling.min_replicas, scaling.max_replicas) == (limit, limit)
