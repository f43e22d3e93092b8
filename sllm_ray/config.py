"""Configuration of an sllm_ray application, validated at the edge.

``configs/serve.yaml`` passes an ``AppConfig`` as the ``args`` of the application; every
knob is documented on its field (and in the README's configuration table). Nothing here
imports vLLM: the ingress and the Serve controller read these models too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# OpenAI model ids are free-form; we accept the characters Hugging Face ids use. "#" is
# excluded because Serve reserves it in deployment names.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
DEPLOYMENT_PREFIX = "model:"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingConfig(_Strict):
    """How a model's replicas follow demand. Defaults make a model serverless."""

    min_replicas: int = Field(0, ge=0, description="Replicas kept even when idle (0: scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(
        4.0, gt=0, description="In-flight requests per replica the autoscaler aims for."
    )
    keep_alive_s: float = Field(
        300.0, ge=0, description="Idle seconds before a replica is removed (down to min_replicas)."
    )
    look_back_period_s: float = Field(
        15.0,
        gt=0,
        description="Window over which Serve averages load (keep it above Serve's 10 s metrics period).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})"
            )
        return self

    def to_serve(self) -> dict[str, Any]:
        """Serve's ``autoscaling_config`` for this policy."""
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": 0.0,
            "downscale_delay_s": self.keep_alive_s,
            "downscale_to_zero_delay_s": self.keep_alive_s,
            "look_back_period_s": self.look_back_period_s,
        }


class ResourceConfig(_Strict):
    """What one replica of the model reserves from Ray."""

    num_cpus: float = Field(1.0, ge=0, description="Logical CPUs per replica.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (vLLM on GPU).")
    memory_bytes: int | None = Field(None, ge=0, description="Memory reserved per replica.")
    custom: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources per replica (e.g. node labels)."
    )

    def to_ray_actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes is not None:
            options["memory"] = self.memory_bytes
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


class ModelConfig(_Strict):
    """One served model: where its weights come from and how it is run and scaled."""

    model: str = Field(description="Name clients put in the request's `model` field.")
    model_source: str = Field(
        description="Hugging Face model id or a local folder (relative paths: to the working dir)."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments (AsyncEngineArgs fields)."
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    resources: ResourceConfig = Field(default_factory=ResourceConfig)
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests one replica works on at once; more wait in Serve's queue."
    )
    request_wait_timeout_s: float | None = Field(
        None, gt=0, description="This model's bound on waiting for a replica (default: the app's)."
    )

    @field_validator("model")
    @classmethod
    def _name(cls, value: str) -> str:
        if not MODEL_NAME_RE.match(value):
            raise ValueError(
                "model names use letters, digits and . _ : / - (at most 128), starting with a letter or digit"
            )
        return value

    @field_validator("model_source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model_source must not be empty")
        return value

    @property
    def deployment_name(self) -> str:
        return DEPLOYMENT_PREFIX + self.model

    def resolved_source(self, base: Path | None = None) -> str:
        """The source as vLLM should see it: existing relative folders become absolute,
        so replicas on any working directory find them; hub ids pass through."""
        path = Path(self.model_source).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return str(path.resolve()) if path.exists() else self.model_source


class AppConfig(_Strict):
    """The whole application: its models and the ingress's behaviour."""

    models: list[ModelConfig] = Field(default_factory=list, description="Models served.")
    request_wait_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a request may wait for a replica (e.g. during scale-from-zero) before 503.",
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After seconds sent with 503 responses.")
    ingress_replicas: int = Field(1, ge=1, description="Replicas of the OpenAI ingress deployment.")

    @model_validator(mode="after")
    def _unique(self) -> AppConfig:
        seen: set[str] = set()
        for model in self.models:
            if model.model in seen:
                raise ValueError(f"model {model.model!r} is listed twice")
            seen.add(model.model)
        return self
