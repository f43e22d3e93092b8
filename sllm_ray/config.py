"""Configuration of an sllm_ray application, validated at the edge.

``configs/serve.yaml`` passes an ``AppConfig`` as the ``args`` of the application; every
knob is documented on its field (and in the README's configuration table), and each can be
set from the environment as ``SLLM_RAY_<FIELD>`` (``app_config``). Nothing here imports
vLLM: the ingress and the Serve controller read these models too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from sllm_ray.engine.interface import DEFAULT_ENGINE

# OpenAI model ids are free-form; we accept the characters Hugging Face ids use. "#" is
# excluded because Serve reserves it in deployment names.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
# The same for clients of the OpenAPI document (property-based testers generate from it):
# "/"-separated segments, none empty, `.` or `..`. Only the sub-resource segments
# (``SUBRESOURCES`` after the first) are left to the validator.
MODEL_NAME_SCHEMA = {
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:-]*(/\.*[A-Za-z0-9_:-][A-Za-z0-9._:-]*)*$",
    "minLength": 1,
    "maxLength": 128,
}
# A model or adapter source: anything but blank.
SOURCE_SCHEMA = {"pattern": r"\S", "minLength": 1}
# The admin API's sub-resources of a model (``/v1/admin/models/{name}/<one of them>``).
SUBRESOURCES = ("adapters", "warm")


def names_subresource(path: str) -> bool:
    """Whether a model path names one of a model's sub-resources (``a/adapters``,
    ``a/adapters/x``, ``a/warm``): a segment after the first is one of ``SUBRESOURCES``."""
    return any(segment in SUBRESOURCES for segment in path.split("/")[1:])


DEPLOYMENT_PREFIX = "model:"

# Every model deployment's autoscaling policy, by import path: Serve imports it in its
# controller, and an import here would load Serve into every user of this module.
AUTOSCALING_POLICY_PATH = "sllm_ray.control.autoscaling_policy:QueueLengthPolicy"

# Upper bounds of the numbers a config takes: beyond them a value is a typo or an attack
# (Serve itself refuses some, e.g. 1e29 replicas, only once the config is deployed).
MAX_REPLICAS = 1000
MAX_SECONDS = 30 * 24 * 3600  # keep-alive, wait bounds: a month
MAX_REQUESTS = 1_000_000  # requests in flight or queued per replica / model
MAX_CPUS = 1024
MAX_GPUS = 64
MAX_BYTES = 2**50  # memory and byte budgets: 1 PiB
# Largest magnitude of any number in engine_kwargs: integers beyond it are not exact as
# JSON numbers elsewhere (2**53), and no vLLM argument needs more.
MAX_ENGINE_NUMBER = 2**53
# The bound in the OpenAPI document, as an extension: JSON Schema has no keyword for the
# numbers at any depth of a free-form object (tests/contract/hooks.py reads it).
ENGINE_NUMBERS_SCHEMA = {"x-max-number-magnitude": MAX_ENGINE_NUMBER}
# Bounds of the vLLM engine arguments that size an engine, checked before vLLM sees them
# (``max_model_len: -1`` would otherwise be stored and fail in every replica).
ENGINE_ARG_BOUNDS: dict[str, tuple[float, float]] = {
    "max_model_len": (1, 2**24),
    "tensor_parallel_size": (1, MAX_GPUS),
    "pipeline_parallel_size": (1, MAX_GPUS),
    "max_num_seqs": (1, MAX_REQUESTS),
    "max_num_batched_tokens": (1, 2**26),
    "max_logprobs": (0, 1000),
    "block_size": (1, 2**16),
    "kv_cache_memory_bytes": (1, MAX_BYTES),
    "gpu_memory_utilization": (0.0, 1.0),
    "swap_space": (0, 2**20),
    "cpu_offload_gb": (0, 2**20),
}


class _Strict(BaseModel):
    # NaN and infinities are refused: JSON cannot carry them, so a stored config holding
    # one would not read back (pydantic writes them as null).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AutoscalingConfig(_Strict):
    """How a model's replicas follow demand. Defaults make a model serverless."""

    min_replicas: int = Field(
        0, ge=0, le=MAX_REPLICAS, description="Replicas kept even when idle (0: scale to zero)."
    )
    max_replicas: int = Field(1, ge=1, le=MAX_REPLICAS, description="Upper bound on replicas.")
    target_ongoing_requests: float = Field(
        4.0, gt=0, le=MAX_REQUESTS, description="In-flight requests per replica the autoscaler aims for."
    )
    keep_alive_s: float = Field(
        300.0,
        ge=0,
        le=MAX_SECONDS,
        description="Idle seconds before a replica is removed (down to min_replicas); with keep_alive "
        "adaptive, the fallback while the model's idle-time histogram is too thin, and the budget: "
        "adaptive windows hold a replica at most 1.6x the replica-seconds this would have.",
    )
    keep_alive: Literal["fixed", "adaptive"] = Field(
        "fixed",
        description="adaptive: the manager sets the model's keep-alive and pre-warm windows from the "
        "histogram of its own idle times (control/keep_alive.py, the hybrid-histogram policy of "
        "'Serverless in the Wild'); fixed: keep_alive_s.",
    )
    keep_alive_bin_s: float = Field(
        60.0, gt=0, le=3600, description="Bin width of the adaptive keep-alive's idle-time histogram."
    )
    look_back_period_s: float = Field(
        15.0, gt=0, le=3600, description="Window over which Serve averages load."
    )
    demand_push_interval_s: float = Field(
        0.1,
        # Each handle pushes at this interval: faster than 10 ms only loads the controller.
        ge=0.01,
        le=60,
        description="How often callers report queued requests to Serve's autoscaler: the delay "
        "before a model at zero replicas starts one.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.look_back_period_s <= self.demand_push_interval_s:
            raise ValueError("look_back_period_s must exceed demand_push_interval_s")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})"
            )
        return self

    def to_serve(self) -> dict[str, Any]:
        """Serve's ``autoscaling_config`` for this policy.

        No ``initial_replicas``: Serve resets a running deployment to it whenever the
        autoscaling config changes, which would drop busy replicas on a keep-alive update.
        A new deployment starts at ``min_replicas`` all the same."""
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": 0.0,
            "downscale_delay_s": self.keep_alive_s,
            "downscale_to_zero_delay_s": self.keep_alive_s,
            "look_back_period_s": self.look_back_period_s,
            # Serve pushes queued-request metrics from each handle at this interval and
            # only the next push after a request is queued shows it (10 s by default).
            "metrics_interval_s": self.demand_push_interval_s,
            "policy": {"policy_function": AUTOSCALING_POLICY_PATH},
        }


def engine_workers(engine_kwargs: dict[str, Any]) -> int:
    """Model workers an engine runs: tensor-parallel size times pipeline-parallel size."""
    return math.prod(int(engine_kwargs.get(k, 1)) for k in ("tensor_parallel_size", "pipeline_parallel_size"))


class ResourceConfig(_Strict):
    """What one replica of the model reserves from Ray."""

    num_cpus: float = Field(1.0, ge=0, le=MAX_CPUS, description="Logical CPUs per replica.")
    num_gpus: float = Field(0.0, ge=0, le=MAX_GPUS, description="GPUs per replica (vLLM on GPU).")
    memory_bytes: int | None = Field(None, ge=0, le=MAX_BYTES, description="Memory reserved per replica.")
    custom: dict[str, Annotated[float, Field(ge=0, le=MAX_BYTES)]] = Field(
        default_factory=dict, description="Custom Ray resources per replica (e.g. node labels)."
    )

    def to_ray_actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes is not None:
            options["memory"] = self.memory_bytes
        if self.custom:
            options["resources"] = dict(self.custom)
        return options

    def placement_bundles(self, workers: int) -> list[dict[str, float]]:
        """The replica's placement group for an engine of ``workers`` model workers: one
        bundle per worker, each an equal share of the CPUs and GPUs (GPU bundles on GPUs,
        CPU bundles otherwise); memory and custom resources in the first, the replica's."""
        share = {"CPU": self.num_cpus / workers, "GPU": self.num_gpus / workers}
        bundles = [{k: v for k, v in share.items() if v} for _ in range(workers)]
        if self.memory_bytes is not None:
            bundles[0]["memory"] = self.memory_bytes
        bundles[0].update(self.custom)
        return bundles


class RequestLimits(_Strict):
    """Bounds on what one request may ask of a model, checked by the ingress before the
    request is queued (400 above them): without them one request (``n: 1000``, thousands of
    prompts) holds a replica for minutes while the others wait."""

    n: int = Field(16, ge=1, le=1024, description="Largest `n` (choices per prompt).")
    best_of: int = Field(16, ge=1, le=1024, description="Largest `best_of`.")
    logprobs: int = Field(
        20, ge=0, le=1000, description="Largest `logprobs` / `top_logprobs` / `prompt_logprobs`."
    )
    prompts: int = Field(64, ge=1, le=100_000, description="Most prompts in one completion request.")
    prompt_chars: int = Field(
        131_072,
        ge=1,
        le=2**30,
        description="Longest prompt: characters of text (a chat: of all its messages), or token ids.",
    )
    stop: int = Field(16, ge=0, le=1024, description="Most `stop` strings.")
    max_tokens: int = Field(
        32_768, ge=1, le=2**24, description="Largest `max_tokens` / `max_completion_tokens`."
    )


def _json_value(value: Any, where: str) -> None:
    """A value that is plain JSON with bounded, finite numbers (what the registry can store
    and read back unchanged), else ``ValueError`` naming where."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings")
            _json_value(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_value(item, f"{where}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > MAX_ENGINE_NUMBER:
            raise ValueError(f"{where}: {value} is not a finite number of at most {MAX_ENGINE_NUMBER}")
    elif value is not None and not isinstance(value, str | bool):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


class AdapterConfig(_Strict):
    """A LoRA adapter on a base model, served under its own name."""

    adapter: str = Field(
        description="Name clients put in the request's `model` field for it.",
        json_schema_extra=MODEL_NAME_SCHEMA,
    )
    source: str = Field(
        description="Folder in PEFT's layout (within model_roots), or a Hugging Face id.",
        json_schema_extra=SOURCE_SCHEMA,
    )

    @field_validator("adapter")
    @classmethod
    def _name(cls, value: str) -> str:
        return _model_name(value)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("source must not be empty")
        return value


def _model_name(value: str) -> str:
    if not MODEL_NAME_RE.match(value):
        raise ValueError(
            "model names use letters, digits and . _ : / - (at most 128), starting with a letter or digit"
        )
    # Clients and proxies normalise URL paths: /v1/models/a/../b would reach another name.
    if any(segment in ("", ".", "..") for segment in value.split("/")):
        raise ValueError("model names have no empty, `.` or `..` path segments")
    # /v1/admin/models/a/adapters is model a's adapters, never a model `a/adapters`.
    if names_subresource(value):
        raise ValueError(f"model names have no {' or '.join(SUBRESOURCES)} path segment after the first")
    return value


# What the validators check across fields, for clients of the OpenAPI document: a model
# with adapters runs vLLM's LoRA support (``control.adapters.lora_ready``).
ADAPTERS_NEED_LORA_SCHEMA = {
    "if": {"required": ["adapters"], "properties": {"adapters": {"minItems": 1}}},
    "then": {
        "required": ["engine_kwargs"],
        "properties": {
            "engine_kwargs": {
                "required": ["enable_lora"],
                "properties": {"enable_lora": {"const": True}, "runner": {"not": {"const": "pooling"}}},
            }
        },
    },
}


class ModelConfig(_Strict):
    """One served model: where its weights come from and how it is run and scaled."""

    model_config = ConfigDict(json_schema_extra=ADAPTERS_NEED_LORA_SCHEMA)

    model: str = Field(
        description="Name clients put in the request's `model` field.", json_schema_extra=MODEL_NAME_SCHEMA
    )
    model_source: str = Field(
        description="Hugging Face model id or a local folder (relative paths: to the working dir).",
        json_schema_extra=SOURCE_SCHEMA,
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="vLLM engine arguments (AsyncEngineArgs fields).",
        json_schema_extra=ENGINE_NUMBERS_SCHEMA,
    )
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    resources: ResourceConfig = Field(default_factory=ResourceConfig)
    request_limits: RequestLimits = Field(default_factory=RequestLimits)
    max_ongoing_requests: int = Field(
        64,
        ge=1,
        le=MAX_REQUESTS,
        description="Requests one replica works on at once; more wait in Serve's queue.",
    )
    max_queued_requests: int | None = Field(
        None,
        ge=1,
        le=MAX_REQUESTS,
        description="Requests that may wait for this model's replicas; beyond it 429.",
    )
    max_tokens_limit: int | None = Field(
        None,
        ge=1,
        le=2**24,
        description="Cap on a request's max_tokens (filled in when a request omits it).",
    )
    request_wait_timeout_s: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS,
        description="This model's bound on waiting for a replica (default: the app's).",
    )
    request_deadline_s: float | None = Field(
        None,
        gt=0,
        le=MAX_SECONDS,
        description="This model's request deadline (default: the app's request_deadline_s, which "
        "also bounds it).",
    )
    keep_asleep: bool = Field(
        True,
        description="When a replica goes, keep its engine asleep on the node for a hot start "
        "(within the app's engine_sleepers_per_node); applies to replicas started after a change.",
    )
    resume_streams: bool = Field(
        True,
        description="Continue a stream cut by a dead engine host or replica on a new engine, "
        "from the tokens already sent (once per request; see README, *Streams that survive "
        "their engine*).",
    )

    adapters: list[AdapterConfig] = Field(
        default_factory=list,
        description="LoRA adapters served by this model's replicas (engine_kwargs.enable_lora); "
        "changed through the adapter routes, without replacing replicas.",
    )

    @field_validator("model")
    @classmethod
    def _name(cls, value: str) -> str:
        return _model_name(value)

    @field_validator("adapters")
    @classmethod
    def _unique_adapters(cls, value: list[AdapterConfig]) -> list[AdapterConfig]:
        names = [a.adapter for a in value]
        if len(set(names)) != len(names):
            raise ValueError("adapter names must be unique")
        return value

    @property
    def pooling(self) -> bool:
        """Whether the model runs vLLM's pooling runner (embeddings), not generation."""
        return self.engine_kwargs.get("runner") == "pooling"

    def adapter(self, name: str) -> AdapterConfig | None:
        return next((a for a in self.adapters if a.adapter == name), None)

    @field_validator("engine_kwargs")
    @classmethod
    def _engine_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        _json_value(value, "engine_kwargs")
        for key, (low, high) in ENGINE_ARG_BOUNDS.items():
            number = value.get(key)
            if number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float) or not low <= number <= high:
                raise ValueError(f"engine_kwargs.{key} must be a number from {low} to {high}")
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

    def engine_fingerprint(self) -> str:
        """Identity of what a replica's engine is built from: when it changes, replicas must
        be replaced; any other change (autoscaling, limits, adapters: loaded per request)
        applies in place."""
        identity = {
            "model": self.model,
            "model_source": self.model_source,
            "engine_kwargs": self.engine_kwargs,
            "resources": self.resources.model_dump(),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Engine memory when a model's engine arguments bound none. vLLM's own default takes a
# fraction of the whole device: 92% of a CPU node's memory (which a second engine on the
# node can never get, so the model never starts), 90% of a GPU. These defaults are
# documented in the README (*Memory*).
MiB = 1024**2
# A CPU engine's KV cache with no memory reservation: enough for a few sequences of a small
# model, and several engines (and the node's sleeping engines) fit on a node.
CPU_KV_CACHE_BYTES = 256 * MiB
# The part of ``resources.memory_bytes`` given to the KV cache; the rest is for the
# weights, activations and the engine process itself.
KV_CACHE_SHARE_OF_MEMORY = 0.5
# ``gpu_memory_utilization`` of an engine that owns a whole GPU: vLLM's default.
GPU_MEMORY_CEILING = 0.9
# A GPU's fraction kept free for each engine the node may keep asleep: a sleeping engine
# still holds its CUDA context and allocator pools (about 0.5 GiB: 2-3% of a 16-24 GB GPU).
SLEEPER_GPU_RESERVE = 0.03
# Below this an engine has no room for a KV cache worth having.
MIN_GPU_MEMORY_UTILIZATION = 0.05


class FitError(ValueError):
    """A model that no node can run as configured; ``param`` names the field to change."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def gpu_memory_utilization(gpus_per_worker: float, sleepers_per_node: int) -> float:
    """vLLM's ``gpu_memory_utilization`` (a per-engine fraction of each of its GPUs) for a
    worker reserving ``gpus_per_worker`` GPUs: its share of the ceiling, less room for the
    node's sleeping engines, which may all sit on this GPU."""
    share = min(gpus_per_worker, 1.0)
    utilization = round(share * GPU_MEMORY_CEILING - sleepers_per_node * SLEEPER_GPU_RESERVE, 3)
    if utilization < MIN_GPU_MEMORY_UTILIZATION:
        raise FitError(
            "resources.num_gpus",
            f"a share of {share:g} GPU per engine worker leaves {max(utilization, 0):g} of the GPU "
            f"once room is kept for {sleepers_per_node} sleeping engines (engine_sleepers_per_node); "
            "reserve more of a GPU or set engine_kwargs.gpu_memory_utilization",
        )
    return utilization


def effective_engine_kwargs(config: ModelConfig, sleepers_per_node: int) -> dict[str, Any]:
    """The engine arguments a replica is built with: the model's own, plus a memory bound
    derived from what the replica reserves when they name none (see the constants above).

    GPU (``resources.num_gpus > 0``), neither ``gpu_memory_utilization`` nor
    ``kv_cache_memory_bytes`` given: ``gpu_memory_utilization`` from the GPU share of one
    worker. CPU, neither given (on CPU ``gpu_memory_utilization`` is vLLM's fraction of the
    node's memory): ``kv_cache_memory_bytes``, ``KV_CACHE_SHARE_OF_MEMORY`` of
    ``resources.memory_bytes`` when set, else ``CPU_KV_CACHE_BYTES``."""
    kwargs = dict(config.engine_kwargs)
    if "gpu_memory_utilization" in kwargs or "kv_cache_memory_bytes" in kwargs:
        return kwargs
    resources = config.resources
    if resources.num_gpus > 0:
        per_worker = resources.num_gpus / engine_workers(kwargs)
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization(per_worker, sleepers_per_node)
    elif resources.memory_bytes:
        kwargs["kv_cache_memory_bytes"] = int(resources.memory_bytes * KV_CACHE_SHARE_OF_MEMORY)
    else:
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return kwargs


def fit_problem(
    config: ModelConfig, engine_kwargs: Mapping[str, Any], shapes: Sequence[Mapping[str, float]]
) -> FitError | None:
    """Why no node of ``shapes`` (Ray resource totals: the alive nodes, and the node types
    an autoscaler may add) can hold one replica of the model, or None when one can (or
    nothing is known of the nodes). Checked: CPUs, GPUs, the replica's memory and, on CPU,
    the KV cache, which lives in the node's memory. A node that reports no ``memory`` is
    not held to it."""
    if not shapes:
        return None
    resources = config.resources
    needs: list[tuple[str, str, float]] = [
        ("resources.num_cpus", "CPU", resources.num_cpus),
        ("resources.num_gpus", "GPU", resources.num_gpus),
    ]
    if resources.memory_bytes:
        needs.append(("resources.memory_bytes", "memory", resources.memory_bytes))
    kv = engine_kwargs.get("kv_cache_memory_bytes")
    if resources.num_gpus == 0 and isinstance(kv, int | float) and not isinstance(kv, bool):
        needs.append(("engine_kwargs.kv_cache_memory_bytes", "memory", kv))

    def holds(shape: Mapping[str, float], key: str, amount: float) -> bool:
        if key == "memory" and key not in shape:
            return True
        return amount <= shape.get(key, 0.0)

    def shown(key: str, amount: float) -> str:
        return f"{amount / 1024**3:.2f} GiB memory" if key == "memory" else f"{amount:g} {key}"

    for param, key, amount in needs:
        if amount and not any(holds(shape, key, amount) for shape in shapes):
            largest = max(shape.get(key, 0.0) for shape in shapes)
            return FitError(
                param, f"{param} asks for {shown(key, amount)}; the largest node has {shown(key, largest)}"
            )
    if not any(all(holds(shape, key, amount) for _, key, amount in needs) for shape in shapes):
        wanted = ", ".join(shown(key, amount) for _, key, amount in needs if amount)
        return FitError("resources", f"no node has {wanted} at once")
    return None


# Fields of a Hugging Face config that bound the sequence length, as vLLM reads them; vLLM
# takes the smallest one present.
_POSITION_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


def position_limit(hf_config: Mapping[str, Any]) -> int | None:
    """The longest sequence a model takes, from its ``config.json``; None when it names
    none. Lenient where vLLM's rules are subtle: a RoPE scaling factor always stretches the
    limit, so a length vLLM accepts is never refused here (vLLM checks again when building)."""
    text = hf_config.get("text_config")
    source = text if isinstance(text, Mapping) else hf_config
    lengths = [v for k in _POSITION_KEYS if isinstance(v := source.get(k), int) and not isinstance(v, bool)]
    if not lengths:
        return None
    factor = 1.0
    for key in ("rope_scaling", "rope_parameters"):
        scaling = source.get(key)
        if isinstance(scaling, Mapping) and isinstance(scaling.get("factor"), int | float):
            factor = max(factor, float(scaling["factor"]))
    return int(min(lengths) * factor)


class AppConfig(_Strict):
    """The whole application: its models and the ingress's behaviour."""

    models: list[ModelConfig] = Field(default_factory=list, description="Models served.")
    request_wait_timeout_s: float = Field(
        120.0,
        gt=0,
        description="How long a request may wait for a replica (e.g. during scale-from-zero) before 503.",
    )
    retry_after_s: int = Field(5, ge=1, description="Retry-After seconds sent with 503 responses.")
    request_deadline_s: float = Field(
        600.0,
        gt=0,
        le=MAX_SECONDS,
        description="The longest any request may take to its response (a stream: to its first "
        "event, then between events) before a 504; a stalled request ends instead of holding its "
        "connection. Includes the wait for a replica.",
    )
    request_body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long a client may take to send its request body before a 408.",
    )
    ingress_replicas: int | None = Field(
        None,
        ge=1,
        description="Replicas of the OpenAI ingress deployment (default: 2 where the node that builds "
        "the app has at least 4 CPUs, so that new requests go on while one is replaced; else 1).",
    )
    data_dir: str = Field("data", description="Folder for the registry (relative: to the working dir).")
    registry_path: str | None = Field(
        None, description="SQLite registry file (default: <data_dir>/registry.sqlite)."
    )
    model_roots: list[str] = Field(
        default_factory=lambda: ["models"],
        description="Folders a local model_source must lie in (relative: to the working dir).",
    )
    allow_hub_models: bool = Field(True, description="Accept Hugging Face ids as model_source.")
    api_keys_file: str | None = Field(
        None, description="YAML/JSON file of API keys and roles (also: SLLM_RAY_API_KEYS env var)."
    )
    allow_trust_remote_code: bool = Field(
        False,
        description="Accept engine_kwargs.trust_remote_code: true, which runs code from the model's "
        "folder or hub repository in the engine hosts.",
    )
    max_request_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body accepted; beyond it 413."
    )
    engine_hosts_per_node: int = Field(
        4,
        ge=0,
        description="Engine hosts kept ready on each node at least, ahead of demand: forked from the "
        "node's launcher (vLLM imported once), about 7 MB of unique memory each. After a burst, as "
        "many as the largest burst of cold starts of the last 10 minutes, within engine_host_memory_bytes.",
    )
    engine_builds_per_node: int | None = Field(
        None,
        ge=0,
        description="Engine builds a node runs at once; the others wait for a slot (default: one per "
        "CPU of the node; 0: no limit). Builds are CPU and memory-bandwidth bound: four at once on two "
        "cores each took 5 to 6 times as long as one alone, so all finished late.",
    )
    store_prefetch_nodes: int | None = Field(
        None,
        ge=1,
        description="Nodes whose checkpoint store converts and prefetches each model into DRAM when it "
        "is registered (default: every node); other nodes copy it from a peer when a replica needs it.",
    )
    engine_sleepers_per_node: int = Field(
        2,
        ge=0,
        description="Engines kept asleep on each node after their model went back to zero, for hot "
        "starts; beyond it the least recently used exits. 0: engines exit with their replica.",
    )
    engine_host_memory_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="Memory (unique set size) the prepared, idle engine hosts of a node may hold in "
        "all: within it a node keeps as many ready hosts as its recent cold starts need.",
    )
    replica_workers_per_node: int = Field(
        4,
        ge=0,
        description="Idle Ray worker processes kept on each node, Serve's replica code imported, for "
        "the next model replicas: a scale from zero then skips Ray's worker start (about 2 s on 2 "
        "cores, 4 to 9 s during a burst); about 80 MB of unique memory each. After a burst, as many "
        "as the largest burst of cold starts of the last 10 minutes.",
    )
    engine_cls: str = Field(
        DEFAULT_ENGINE,
        description="The engine engine hosts build, as module:Class (tests inject a fake one).",
    )
    store_dram_bytes: int = Field(
        2 * 1024**3, ge=0, description="Byte budget of each node's DRAM checkpoint tier."
    )
    store_dram_dir: str = Field(
        "/dev/shm/sllm_ray", description="Shared-memory folder of the DRAM tier (a tmpfs on each node)."
    )
    failed_start_backoff_s: float = Field(
        5.0,
        gt=0,
        description="After a model's replica failed to start, requests get the error at once for "
        "this long; then the next request tries again. Doubles with each failure in a row.",
    )
    failed_start_backoff_max_s: float = Field(
        300.0, gt=0, description="Upper bound of the backoff after failed starts."
    )
    failed_starts_before_failed: int = Field(
        3, ge=1, description="Failed starts in a row after which a model's state is `failed`."
    )
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="On SIGTERM (`sllm-ray serve`, the container), how long requests and streams "
        "in flight may take to finish while new ones get 503; then the app shuts down.",
    )

    @model_validator(mode="after")
    def _deadline_after_wait(self) -> AppConfig:
        # A deadline within the wait bound would turn the wait's honest 503 into a 504.
        if self.request_deadline_s <= self.request_wait_timeout_s:
            raise ValueError(
                f"request_deadline_s ({self.request_deadline_s:g}) must exceed "
                f"request_wait_timeout_s ({self.request_wait_timeout_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _unique(self) -> AppConfig:
        seen: set[str] = set()
        for model in self.models:
            if model.model in seen:
                raise ValueError(f"model {model.model!r} is listed twice")
            seen.add(model.model)
        return self


ENV_PREFIX = "SLLM_RAY_"
# Variables with the prefix that are not AppConfig fields: read elsewhere (the CLI's server
# and key, the keys themselves, the address `sllm-ray serve` has Serve's proxy listen on).
ENV_NOT_FIELDS = frozenset(
    ENV_PREFIX + name for name in ("URL", "API_KEY", "API_KEYS", "HTTP_HOST", "HTTP_PORT")
)


def _string_list(field: FieldInfo) -> bool:
    return field.annotation == list[str]


class _EnvSource(EnvSettingsSource):
    """The environment, where a list of strings may also be comma-separated
    (``SLLM_RAY_MODEL_ROOTS=models,/mnt/models``); other lists and objects are JSON."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if isinstance(value, str) and _string_list(field) and not value.lstrip().startswith("["):
            return [item.strip() for item in value.split(",") if item.strip()]
        return super().decode_complex_value(field_name, field, value)


class _AppSettings(BaseSettings, AppConfig):
    """``AppConfig`` with the environment over the given values (Serve's ``args``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", allow_inf_nan=False, title="AppConfig"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _EnvSource(settings_cls), init_settings  # the first one wins


def app_config(args: AppConfig | Mapping[str, Any]) -> AppConfig:
    """The app's config: the ``SLLM_RAY_<FIELD>`` environment variables over ``args`` over
    the defaults, validated as one ``AppConfig``. A variable with the prefix that names no
    field is an error (a typo would otherwise be ignored)."""
    known = {ENV_PREFIX + name.upper() for name in AppConfig.model_fields} | ENV_NOT_FIELDS
    unknown = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)
    if unknown:
        raise ValueError(f"unknown setting(s) in the environment: {', '.join(unknown)}")
    given = args.model_dump(exclude_unset=True) if isinstance(args, AppConfig) else dict(args)
    return AppConfig.model_validate(_AppSettings(**given).model_dump())


# The nested parts of a config a PATCH merges into, rather than replaces.
_MERGED = ("autoscaling", "resources", "request_limits")


class ModelUpdate(_Strict):
    """A partial change to a registered model (PATCH). Nested ``autoscaling``,
    ``resources`` and ``request_limits`` merge into the current values; ``engine_kwargs``
    replaces them whole, so an argument can be removed."""

    model_source: str | None = None
    engine_kwargs: dict[str, Any] | None = None
    autoscaling: dict[str, Any] | None = None
    resources: dict[str, Any] | None = None
    request_limits: dict[str, Any] | None = None
    max_ongoing_requests: int | None = None
    max_queued_requests: int | None = None
    max_tokens_limit: int | None = None
    request_wait_timeout_s: float | None = None
    request_deadline_s: float | None = None
    keep_asleep: bool | None = None
    resume_streams: bool | None = None

    def apply(self, current: ModelConfig | Mapping[str, Any]) -> ModelConfig:
        """The new config: this change over ``current``, a config or its fields as stored (a
        record that no longer validates: a PATCH is how it is fixed)."""
        data = current.model_dump() if isinstance(current, ModelConfig) else dict(current)
        for key, value in self.model_dump(exclude_unset=True).items():
            base = data.get(key)
            merge = key in _MERGED and value is not None and isinstance(base, dict)
            data[key] = {**base, **value} if merge else value
        return ModelConfig.model_validate(data)
