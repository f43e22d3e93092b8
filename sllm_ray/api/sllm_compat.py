"""ServerlessLLM's registration JSON, translated into sllm_ray's model config.

ServerlessLLM users keep their configs: ``POST /register``, ``/update`` and ``/delete`` take
their JSON (``model``, ``backend``, ``num_gpus``, ``auto_scaling_config``,
``backend_config``, LoRA's ``enable_lora`` and ``lora_adapters`` in it, and ``/delete``'s
``lora_adapters``). Pure functions: the routes in the ingress call them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sllm_ray.config import ENGINE_NUMBERS_SCHEMA, MODEL_NAME_SCHEMA, AutoscalingConfig, ResourceConfig
from sllm_ray.errors import UnprocessableError, validation_error

# backend_config keys that belong to ServerlessLLM's transformers backend or to its own
# loader; vLLM has no such engine argument.
_NOT_ENGINE_ARGS = {
    "device_map",
    "hf_model_class",
    "pretrained_model_name_or_path",
    "lora_adapters",
    "precision",
}
_RENAMED = {"torch_dtype": "dtype"}
# auto_scaling_config's fields as ours (``AutoscalingConfig``), which bounds their values.
_AUTOSCALING = {
    "min_instances": "min_replicas",
    "max_instances": "max_replicas",
    "target": "target_ongoing_requests",
    "keep_alive": "keep_alive_s",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


_T = TypeVar("_T", bound=_Strict)


def _bounded_as(ours: str, model: type[BaseModel] = AutoscalingConfig) -> Any:
    """A field of ServerlessLLM's that may be null, with the bounds of ours (of ``model``) it
    becomes: one place says them, and the OpenAPI document shows them for both."""
    field = model.model_fields[ours]
    return Annotated[field.annotation | None, *field.metadata]


class SllmAutoscaling(_Strict):
    metric: Literal["concurrency"] = "concurrency"
    target: _bounded_as("target_ongoing_requests") = None
    min_instances: _bounded_as("min_replicas") = None
    max_instances: _bounded_as("max_replicas") = None
    keep_alive: _bounded_as("keep_alive_s") = None

    def ours(self) -> dict[str, Any]:
        """Our ``autoscaling`` fields, those given only (null: ServerlessLLM's default, so ours)."""
        given = self.model_dump(exclude_unset=True, exclude_none=True)
        return {ours: given[theirs] for theirs, ours in _AUTOSCALING.items() if theirs in given}


class SllmDelete(_Strict):
    """``POST /delete``'s body: the model, or with ``lora_adapters`` (names, or their
    ``{name: path}``) those adapters of it."""

    model: str = Field(min_length=1, json_schema_extra=MODEL_NAME_SCHEMA)
    lora_adapters: list[str] | dict[str, str] | None = None


class SllmDeploy(SllmDelete):
    """``sllm deploy``'s config: the body of ``/register`` and, its fields optional but the
    model's, of ``/update``."""

    backend: Literal["vllm"] = "vllm"
    num_gpus: _bounded_as("num_gpus", ResourceConfig) = None
    auto_scaling_config: SllmAutoscaling | None = None
    backend_config: dict[str, Any] | None = Field(None, json_schema_extra=ENGINE_NUMBERS_SCHEMA)

    def engine_kwargs(self) -> dict[str, Any]:
        config = self.backend_config or {}
        if config.get("precision"):
            # Their transformers backend quantizes with bitsandbytes by it; vLLM takes its own
            # ``quantization`` argument instead, which a different checkpoint may need.
            raise UnprocessableError(
                f"backend_config.precision ({config['precision']!r}) is the transformers backend's "
                "bitsandbytes quantization, which the vllm backend does not take; use vLLM's "
                "backend_config.quantization (e.g. a quantized checkpoint) or dtype instead",
                param="backend_config.precision",
            )
        return {_RENAMED.get(key, key): value for key, value in config.items() if key not in _NOT_ENGINE_ARGS}

    def adapters(self) -> list[dict[str, str]]:
        """``backend_config.lora_adapters`` (``{name: path}``) as our adapters."""
        given = (self.backend_config or {}).get("lora_adapters") or {}
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise UnprocessableError(
                "backend_config.lora_adapters must map adapter names to paths",
                param="backend_config.lora_adapters",
            )
        return [{"adapter": name, "source": source} for name, source in given.items()]


def _parsed(cls: type[_T], body: dict[str, Any]) -> _T:
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(), UnprocessableError, every=True) from None


def deleted(body: dict[str, Any]) -> tuple[str, list[str] | None]:
    """What ``/delete`` removes: the model, and None; or its adapters so named."""
    delete = _parsed(SllmDelete, body)
    return delete.model, None if delete.lora_adapters is None else list(delete.lora_adapters)


def adapters(body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """The model of a ``/register`` or ``/update`` and the adapters it gives."""
    deploy = _parsed(SllmDeploy, body)
    return deploy.model, deploy.adapters()


def register_body(body: dict[str, Any]) -> dict[str, Any]:
    """ServerlessLLM's ``/register`` JSON as the body of ``POST /v1/admin/models``."""
    deploy = _parsed(SllmDeploy, body)
    backend_config = deploy.backend_config or {}
    model: dict[str, Any] = {
        "model": deploy.model,
        "model_source": backend_config.get("pretrained_model_name_or_path") or deploy.model,
        "engine_kwargs": deploy.engine_kwargs(),
    }
    if given := deploy.adapters():
        model["adapters"] = given
    if "auto_scaling_config" in deploy.model_fields_set:
        model["autoscaling"] = deploy.auto_scaling_config.ours() if deploy.auto_scaling_config else {}
    if deploy.num_gpus is not None:
        model["resources"] = {"num_gpus": deploy.num_gpus}
    return model


def update_patch(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """ServerlessLLM's ``/update`` JSON as (name, PATCH body)."""
    deploy = _parsed(SllmDeploy, body)
    patch: dict[str, Any] = {}
    if deploy.auto_scaling_config is not None:
        patch["autoscaling"] = deploy.auto_scaling_config.ours()
    # A body of adapters alone (``sllm deploy --lora-adapters`` of a deployed model) leaves
    # the engine arguments as they are.
    if deploy.backend_config is not None and set(deploy.backend_config) - {"lora_adapters"}:
        if "pretrained_model_name_or_path" in deploy.backend_config:
            patch["model_source"] = deploy.backend_config["pretrained_model_name_or_path"]
        patch["engine_kwargs"] = deploy.engine_kwargs()
        # Their adapters are added by the route, not replaced: PATCH has no adapters.
    if deploy.num_gpus is not None:
        patch["resources"] = {"num_gpus": deploy.num_gpus}
    return deploy.model, patch
