"""ServerlessLLM's registration JSON, translated into sllm_ray's model config.

ServerlessLLM users keep their configs: ``POST /register``, ``/update`` and ``/delete`` take
their JSON (``model``, ``backend``, ``num_gpus``, ``auto_scaling_config``,
``backend_config``). Pure functions: the routes in the ingress call them.
"""

from __future__ import annotations

from typing import Any

from sllm_ray.errors import UnprocessableError

# backend_config keys that belong to ServerlessLLM's transformers backend or to its own
# loader; vLLM has no such engine argument.
_NOT_ENGINE_ARGS = {"device_map", "hf_model_class", "pretrained_model_name_or_path"}
_RENAMED = {"torch_dtype": "dtype"}


def _autoscaling(asc: dict[str, Any]) -> dict[str, Any]:
    metric = asc.get("metric", "concurrency")
    if metric != "concurrency":
        raise UnprocessableError(
            f"auto_scaling_config.metric {metric!r} is not supported (only 'concurrency')",
            param="auto_scaling_config.metric",
        )
    mapping = {
        "min_instances": "min_replicas",
        "max_instances": "max_replicas",
        "target": "target_ongoing_requests",
        "keep_alive": "keep_alive_s",
    }
    unknown = set(asc) - set(mapping) - {"metric"}
    if unknown:
        raise UnprocessableError(
            f"auto_scaling_config: unknown fields {sorted(unknown)}", param="auto_scaling_config"
        )
    return {ours: asc[theirs] for theirs, ours in mapping.items() if theirs in asc}


def _engine_kwargs(backend_config: dict[str, Any]) -> dict[str, Any]:
    return {
        _RENAMED.get(key, key): value for key, value in backend_config.items() if key not in _NOT_ENGINE_ARGS
    }


def model_name(body: dict[str, Any]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise UnprocessableError("`model` is required", param="model")
    return name


def _check_backend(body: dict[str, Any]) -> None:
    backend = body.get("backend", "vllm")
    if backend != "vllm":
        raise UnprocessableError(f"backend {backend!r} is not supported (only 'vllm')", param="backend")


def register_body(body: dict[str, Any]) -> dict[str, Any]:
    """ServerlessLLM's ``/register`` JSON as the body of ``POST /v1/admin/models``."""
    name = model_name(body)
    _check_backend(body)
    backend_config = dict(body.get("backend_config") or {})
    model: dict[str, Any] = {
        "model": name,
        "model_source": backend_config.get("pretrained_model_name_or_path") or name,
        "engine_kwargs": _engine_kwargs(backend_config),
    }
    if "auto_scaling_config" in body:
        model["autoscaling"] = _autoscaling(body["auto_scaling_config"] or {})
    if "num_gpus" in body:
        model["resources"] = {"num_gpus": body["num_gpus"]}
    return model


def update_patch(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """ServerlessLLM's ``/update`` JSON as (name, PATCH body)."""
    name = model_name(body)
    _check_backend(body)
    patch: dict[str, Any] = {}
    if "auto_scaling_config" in body:
        patch["autoscaling"] = _autoscaling(body["auto_scaling_config"] or {})
    if "backend_config" in body:
        backend_config = dict(body["backend_config"] or {})
        if "pretrained_model_name_or_path" in backend_config:
            patch["model_source"] = backend_config["pretrained_model_name_or_path"]
        patch["engine_kwargs"] = _engine_kwargs(backend_config)
    if "num_gpus" in body:
        patch["resources"] = {"num_gpus": body["num_gpus"]}
    return name, patch
