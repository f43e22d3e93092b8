"""Every import from vLLM lives here.

vLLM moves its modules between releases (the OpenAI serving classes moved three times
in 2025-2026); keeping the paths in one module makes an upgrade a one-file change.
Importing this module imports vLLM and torch (about 8 s on a 2-core machine), so only
processes that host an engine import it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import json
import logging
import mmap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from vllm import __version__ as VLLM_VERSION
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.launchers.api_server.app_state import init_app_state
from vllm.entrypoints.launchers.cli_args import FrontendArgs
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from vllm.entrypoints.openai.completion.protocol import (
    CompletionRequest,
    CompletionResponse,
)
from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest
from vllm.entrypoints.serve.engine.protocol import ErrorResponse
from vllm.entrypoints.serve.exception_handling.error_response import create_error_response
from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest
from vllm.usage.usage_lib import UsageContext
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.core_client import EngineCoreClient, InprocClient
from vllm.v1.engine.exceptions import EngineDeadError

logger = logging.getLogger(__name__)

# The release every path and internal below was checked against.
WRITTEN_FOR = "0.32."
if not VLLM_VERSION.startswith(WRITTEN_FOR):
    logger.warning("sllm_ray was written against vLLM %sx; this is %s", WRITTEN_FOR, VLLM_VERSION)

__all__ = [
    "VLLM_VERSION",
    "AsyncEngineArgs",
    "AsyncLLM",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "CompletionRequest",
    "CompletionResponse",
    "EmbeddingRequest",
    "EngineCoreClient",
    "EngineDeadError",
    "ErrorResponse",
    "FrontendArgs",
    "InprocClient",
    "UsageContext",
    "create_error_response",
    "init_app_state",
]

# Model architectures whose modules an engine host imports ahead of demand (the common
# decoder families); others are imported by the engine build that needs them.
PRELOADED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3")
# What an engine build imports on first use (read off ``sys.modules`` around a build of the
# tiny model on CPU, vLLM 0.32): about 0.25 s a host would otherwise pay on its cold path.
# Platform-specific ones missing elsewhere are skipped.
ENGINE_BUILD_MODULES = (
    "vllm.v1.core.sched.scheduler",
    "vllm.v1.core.kv_cache_manager",
    "vllm.v1.core.kv_cache_coordinator",
    "vllm.v1.core.sched.request_queue",
    "vllm.v1.attention.backends.cpu_attn",
    "vllm.renderers.hf",
    "vllm.transformers_utils.chat_templates",
    "vllm.entrypoints.openai.chat_completion.serving",
    "vllm.entrypoints.openai.completion.serving",
    "vllm.entrypoints.openai.responses.serving",
    "vllm.entrypoints.anthropic.serving",
    "vllm.entrypoints.generate.api_router",
    "vllm.entrypoints.scale_out.factories",
    "vllm.entrypoints.serve.utils.fingerprint",
    "vllm.plugins.lora_resolvers",
    # What ``init_app_state`` imports besides (read off ``sys.modules`` around a build in
    # a prepared process): 0.06 s more each host would pay, 0.5 s in a burst of eight.
    "vllm.distributed.elastic_ep.elastic_execute",
    "vllm.distributed.elastic_ep.standby_state",
    "vllm.entrypoints.generate.generative_scoring.serving",
    "vllm.entrypoints.generate.label_reads",
    "vllm.entrypoints.generate.structured_decisions.api_router",
    "vllm.entrypoints.generate.structured_decisions.serving",
    "vllm.entrypoints.openai.chat_completion.batch_serving",
    "vllm.entrypoints.scale_out.derender.serving",
    "vllm.entrypoints.scale_out.render.serving",
    "vllm.entrypoints.scale_out.token_in_token_out.serving",
    "vllm.model_executor.layers.fused_moe.eep_reconfigure",
    "vllm.plugins.lora_resolvers.filesystem_resolver",
    "vllm.plugins.lora_resolvers.hf_hub_resolver",
    "vllm.v1.pool.flash_maxsim.flash_maxsim_rerank",
)


def prepare_engine_process() -> None:
    """Do, ahead of demand, the one-time work each engine build in this process repeats:
    import the platform's worker and model-runner modules and common model code, read the
    installed plugin lists, and let the platform install its kernel overrides once. That
    install rescans every loaded module (about 0.3 s) and finds nothing new a second time,
    since modules imported later take the overridden kernels from where they are defined;
    so later calls in this process are skipped."""
    from vllm.config.logging import LoggingConfig
    from vllm.logger import configure_logging_if_needed
    from vllm.platforms import current_platform

    # vLLM configures Python's logging on every engine build unless the same config is
    # active already; the first time it walks every logger (about 0.5 s here).
    configure_logging_if_needed(LoggingConfig())
    for module in ENGINE_BUILD_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    worker = "vllm.v1.worker.cpu_worker" if current_platform.is_cpu() else "vllm.v1.worker.gpu_worker"
    importlib.import_module(worker)
    importlib.import_module("vllm.model_executor.layers.quantization.online.base")
    for architecture in PRELOADED_ARCHITECTURES:
        importlib.import_module(f"vllm.model_executor.models.{architecture}")
    current_platform.register_triton_kernel_overrides()
    type(current_platform).register_triton_kernel_overrides = classmethod(lambda cls: None)
    from vllm.v1.worker import utils as worker_utils

    if current_platform.is_cpu() and not isinstance(worker_utils.torch, LazyZeros):
        worker_utils.torch = LazyZeros(worker_utils.torch)
    # Each build asks importlib for the installed stat-logger and logits-processor plugins,
    # and each ask reads every installed package's entry points (about 11 ms for both on
    # 2 cores); the general plugins are loaded once per process, by the first engine's
    # arguments (about 6 ms more). What is installed does not change under a running
    # process, so all three are read here, and the hosts forked from it reuse the answer:
    # a plugin installed later takes a restart, as any module imported here does.
    from vllm.plugins import load_general_plugins
    from vllm.v1.engine import async_llm
    from vllm.v1.sample import logits_processor

    load_general_plugins()
    _answer_once(async_llm, "load_stat_logger_plugin_factories")
    _answer_once(logits_processor, "_load_logitsprocs_plugins")
    if current_platform.is_cpu():
        # Each CPU build runs ``lscpu`` twice for the node's CPUs (a shell and lscpu, 3.7 ms
        # of CPU each on 2 cores, in processes no per-process count sees); which of them
        # this process may use is still asked each time (``get_allowed_cpu_list``).
        from vllm.utils import cpu_resource_utils

        _answer_once(cpu_resource_utils, "_get_cpu_list")
        _seed_compiled_devices_only()
        _allow_amx()
    _render_chat_templates_on_first_use()
    _detect_inline_system_merge_on_first_use()
    _resolve_engine_ops()


def _seed_compiled_devices_only() -> None:
    """Each build seeds torch (``set_random_seed``), and ``torch.manual_seed`` seeds
    CUDA, XPU and MTIA too. With no such device initialised, torch queues each of those
    seedings for a lazy init, with the caller's stack formatted for the error it would
    raise: the source line of every frame, read through ``linecache`` from disk in a
    newly forked host. A device whose runtime this torch was built without never
    initialises, so its seeding is dropped. (With the chat template below, 0.01 of the
    0.12 CPU-s a build takes in a forked host on 2 cores: ``benchmarks/engine_build.py``.)"""
    import torch

    for device in (torch.cuda, torch.xpu, torch.mtia):
        if not device._is_compiled():
            device.manual_seed_all = _no_seeding


def _allow_amx() -> None:
    """Linux lets a process use AMX's tile registers only once it asked for them
    (``arch_prctl(ARCH_REQ_XCOMP_PERM)``); an AMX instruction before that is an illegal
    instruction, which kills the process. vLLM's CPU attention runs AMX kernels for bf16
    on CPUs that have AMX. Asked here, before the hosts are forked, the permission is every
    host's."""
    import torch

    if torch.cpu._is_amx_tile_supported() and not torch.cpu._init_amx():
        logger.warning("this CPU has AMX but the kernel refused its use: vLLM's AMX kernels will fail")


def _no_seeding(seed: int) -> None:
    """The seeding of a device this torch has no runtime for."""


def _render_chat_templates_on_first_use() -> None:
    """vLLM renders a chat once while it builds the serving layer, so that a long-lived
    server's first chat request does not pay for resolving and compiling the model's
    chat template. Here a build is on the cold path of the request that asked for it,
    and a completion never needs the template, while a chat pays the same when it
    renders. So the template is resolved on first use."""
    from vllm.renderers.online_renderer import OnlineRenderer

    OnlineRenderer.warmup = _no_warmup  # type: ignore[method-assign]


def _no_warmup(renderer: Any) -> None:
    """A chat template resolved and compiled by the first request that renders one."""


def _detect_inline_system_merge_on_first_use() -> None:
    """vLLM's Anthropic ``/v1/messages`` serving object, built with the others, decides
    as it is built whether the model's chat template needs inline system messages merged:
    it resolves the template twice and compiles it (13 ms of a 0.12 CPU-s forked build on
    2 cores, ``benchmarks/engine_build.py``). An engine host serves no ``/v1/messages``;
    the decision is made by the first request that needs it, with vLLM's own check."""
    from vllm.entrypoints.anthropic.serving import AnthropicServingMessages

    detect = AnthropicServingMessages.__dict__["_should_merge_inline_system"].__func__
    if getattr(detect, "deferred", False):
        return

    def deferred(cls: type, online_renderer: Any) -> FirstUseVerdict:
        return FirstUseVerdict(functools.partial(detect, cls, online_renderer))

    deferred.deferred = True  # type: ignore[attr-defined]
    AnthropicServingMessages._should_merge_inline_system = classmethod(deferred)  # type: ignore[method-assign,assignment]


class FirstUseVerdict:
    """A yes or no that vLLM decides while it builds the serving layer, decided when it is
    first asked instead (vLLM only tests it: ``if merge_inline_system:``)."""

    def __init__(self, decide: Callable[[], bool]) -> None:
        self._decide: Callable[[], bool] | None = decide
        self._verdict = False

    def __bool__(self) -> bool:
        if self._decide is not None:
            self._verdict, self._decide = bool(self._decide()), None
        return self._verdict


# Namespaces of the kernels vLLM registers with torch: its compiled ops and custom ops.
ENGINE_OP_NAMESPACES = ("_C", "vllm")


def _resolve_engine_ops() -> None:
    """``torch.ops.<namespace>.<op>`` builds an op's Python wrapper (its schemas read)
    the first time a process asks, and every host's first forward pass asks for each of
    vLLM's kernels: resolved once here, the forked hosts find them (150 ops, 4 ms)."""
    import torch

    for qualified in torch._C._dispatch_get_all_op_names():
        namespace, _, name = qualified.partition("::")
        if namespace.startswith(ENGINE_OP_NAMESPACES):
            with contextlib.suppress(AttributeError, RuntimeError):
                getattr(getattr(torch.ops, namespace), name.split(".")[0])


def _answer_once(module: Any, name: str) -> None:
    """Replace ``module.name``, a function without arguments that returns a list, with one
    that returns a copy of what it returns now."""
    function = getattr(module, name)
    if getattr(function, "answered_once", False):
        return
    answer = function()

    def answered() -> list[Any]:
        return list(answer)

    answered.answered_once = True  # type: ignore[attr-defined]
    setattr(module, name, answered)


def with_fingerprint(args: argparse.Namespace, vllm_config: Any) -> argparse.Namespace:
    """``args`` (the serving layer's namespace) with the ``system_fingerprint`` of
    ``vllm_config`` computed once: each of vLLM's six serving objects computes it again,
    hashing the whole config each time (about 12 ms of a 0.2 s build on 2 cores). The
    value is what ``fingerprint_mode`` (full or hash) gives; vLLM's ``custom`` mode
    then hands it to every serving object."""
    if args.fingerprint_mode not in ("full", "hash"):
        return args
    from vllm.entrypoints.serve.utils.fingerprint import build_system_fingerprint

    value = build_system_fingerprint(vllm_config, args.fingerprint_mode)
    return argparse.Namespace(**(vars(args) | {"fingerprint_mode": "custom", "fingerprint_value": value}))


# A CPU buffer at least this large that vLLM's KV-cache allocation zeroes is mapped instead.
LAZY_ZERO_MIN_BYTES = 1024**2


class LazyZeros:
    """``torch`` as vLLM's KV-cache allocation (``vllm.v1.worker.utils``) sees it on CPU:
    its backing buffer, ``torch.zeros(size, dtype=int8)``, is fresh anonymous memory, which
    the kernel hands out zeroed as each page is first touched. ``torch.zeros`` writes every
    page at once: 0.27 to 0.46 s for a 1 GiB KV cache on 2 cores, on every cold start, and
    the whole cache resident from then on. Everything else is torch's own."""

    def __init__(self, torch: Any) -> None:
        self._torch = torch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._torch, name)

    def zeros(self, *size: Any, dtype: Any = None, device: Any = None, **kwargs: Any) -> Any:
        torch = self._torch
        if (
            len(size) == 1
            and isinstance(size[0], int)
            and size[0] >= LAZY_ZERO_MIN_BYTES
            and dtype == torch.int8
            and torch.device(device if device is not None else "cpu").type == "cpu"
            and not kwargs
        ):
            # The tensor holds a reference to the mapping: unmapped when it is freed.
            return torch.frombuffer(mmap.mmap(-1, size[0]), dtype=torch.int8)
        return torch.zeros(*size, dtype=dtype, device=device, **kwargs)


def register_model_loader(load_format: str, load_weights: Callable[[dict[str, Any], Any], None]) -> None:
    """Register ``load_format`` with vLLM's model loaders: its ``load_weights`` calls
    ``load_weights(model_loader_extra_config, model)``, and it never downloads (the
    checkpoint store holds the checkpoint before an engine is asked to load it)."""
    from vllm.model_executor.model_loader import register_model_loader as register
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    @register(load_format)
    class _Loader(BaseModelLoader):
        def download_model(self, model_config: object) -> None:
            pass

        def load_weights(self, model: Any, model_config: object) -> None:
            load_weights(dict(self.load_config.model_loader_extra_config), model)


def weights_rank() -> tuple[int, int]:
    """In a model worker: which shard of the model's weights it holds, and how many
    there are (tensor-parallel ranks times pipeline stages)."""
    from vllm.distributed import (
        get_pp_group,
        get_tensor_model_parallel_rank,
        get_tensor_model_parallel_world_size,
    )

    tp, pp = get_tensor_model_parallel_world_size(), get_pp_group()
    return pp.rank_in_group * tp + get_tensor_model_parallel_rank(), tp * pp.world_size


def cache_model_info(model_dir: str) -> None:
    """Have vLLM's model-info cache (under ``VLLM_CACHE_ROOT``) hold the architectures of
    the checkpoint in ``model_dir``. On a miss vLLM inspects the model class in a
    subprocess that imports vLLM again, to keep CUDA out of the caller: about 20 s on the
    2-core machine, on the first cold start of each architecture on a fresh machine. An
    engine host is about to take its devices and build the engine anyway, so it inspects
    the class in process (its module is usually imported already:
    ``PRELOADED_ARCHITECTURES``)."""
    from vllm.model_executor.models.registry import ModelRegistry, _LazyRegisteredModel, _ModelInfo

    try:
        architectures = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return  # not a local checkpoint: vLLM resolves it its own way
    for architecture in architectures:
        model = ModelRegistry.models.get(architecture)
        if not isinstance(model, _LazyRegisteredModel):
            continue
        spec = importlib.util.find_spec(model.module_name)
        if spec is None or spec.origin is None:
            continue
        module_hash = model._get_modelinfo_module_hash(Path(spec.origin))
        if model._load_modelinfo_from_cache(module_hash) is None:
            model._save_modelinfo_to_cache(_ModelInfo.from_model_cls(model.load_model_cls()), module_hash)
            logger.info("cached vLLM's model info for %s", architecture)


def has_unfinished_requests(client: InprocClient) -> bool:
    """Whether the in-process engine core has work for another step: vLLM's own client
    leaves knowing it to its caller's loop (``LLMEngine``), which reads the scheduler."""
    return bool(client.engine_core.scheduler.has_requests())


@contextlib.contextmanager
def async_client_factory(make: Callable[..., Any]) -> Iterator[None]:
    """While active, ``AsyncLLM`` takes its engine-core client from ``make(vllm_config,
    executor_class, log_stats)`` instead of spawning an engine-core process: vLLM 0.32's
    ``AsyncLLM.__init__`` asks ``EngineCoreClient.make_async_mp_client`` for it, once."""
    original = EngineCoreClient.__dict__["make_async_mp_client"]

    def factory(vllm_config: Any, executor_class: type, log_stats: bool, **_: Any) -> Any:
        return make(vllm_config, executor_class, log_stats)

    EngineCoreClient.make_async_mp_client = staticmethod(factory)  # type: ignore[method-assign]
    try:
        yield
    finally:
        EngineCoreClient.make_async_mp_client = original  # type: ignore[method-assign]


# Of the fields vLLM hashes as the structure of the model it builds (below), those that
# leave the built model's parameters (names, shapes, dtypes, shards) as they are: they
# size caches, schedule, time out, choose kernels or communication, or change sampling.
# ``model`` is left out because a layout's key names the model's source already.
NOT_WEIGHT_SHAPING = frozenset(
    {
        # ModelConfig
        "allow_deprecated_quantization",
        "disable_sliding_window",
        "enable_cumem_allocator",
        "enable_nccl_comm_suspend",
        "enable_prompt_embeds",
        "enable_sleep_mode",
        "generation_config",
        "max_logprobs",
        "max_model_len",
        "model",
        "model_weights",
        "override_generation_config",
        "renderer_num_workers",
        "sleep_mode_offload_cudagraph",
        "sleep_preserve_parameter_names",
        # ParallelConfig
        "all2all_backend",
        "cp_kv_cache_interleave_size",
        "cpu_distributed_timeout_seconds",
        "dbo_decode_token_threshold",
        "dbo_prefill_token_threshold",
        "dcp_comm_backend",
        "dcp_kv_cache_interleave_size",
        "disable_nccl_for_dp_synchronization",
        "distributed_timeout_seconds",
        "dp_sync_interval",
        "enable_batch_sharded_sampling",
        "enable_dbo",
        "enable_fault_tolerance",
        "fault_tolerance_config",
        "ubatch_size",
    }
)
# Engine arguments that shape the parameters although vLLM's hashes leave them out:
# ``hf_overrides`` reaches the hash as the model's Hugging Face config, which a tag made
# from the arguments alone cannot read; ``convert`` adds or swaps the head after the
# final hidden states, outside what the hash covers.
ALSO_WEIGHT_SHAPING = frozenset({"hf_overrides", "convert"})


def _structure_factors(config_cls: type) -> set[str]:
    """The fields of one of vLLM's config classes that its ``compute_hash`` hashes ("all
    the configs that affect the structure of the computation graph"): every field but
    those it names as ignored. That set is a local of the method, so it is caught where
    the method hands it to ``vllm.config.utils.get_hash_factors`` (0.32's helper)."""
    from vllm.config import utils

    class Caught(Exception):
        pass

    def catch(_config: object, ignored: set[str]) -> dict[str, object]:
        raise Caught(set(ignored))

    original = utils.get_hash_factors
    utils.get_hash_factors = catch
    try:
        config_cls.compute_hash(None)
    except Caught as caught:
        ignored: set[str] = caught.args[0]
    else:
        raise RuntimeError(f"{config_cls.__name__}.compute_hash no longer calls get_hash_factors")
    finally:
        utils.get_hash_factors = original
    return {f.name for f in dataclasses.fields(config_cls)} - ignored


def weight_shaping_engine_args() -> tuple[str, ...]:
    """The engine arguments that shape the weights of the model an engine builds, as vLLM
    tells: the fields its model and parallel configs hash as the model's structure, less
    ``NOT_WEIGHT_SHAPING``, plus ``ALSO_WEIGHT_SHAPING``, that are engine arguments.

    ``store.locate.LAYOUT_ARGS`` is this list written out (the replica and the manager
    must not import vLLM to tag a layout); a unit test pins the two together, so a vLLM
    release that hashes other fields fails there until each is sorted into one side.
    For tests and upgrades: it patches a vLLM function while it runs."""
    from vllm.config import ModelConfig, ParallelConfig

    factors = _structure_factors(ModelConfig) | _structure_factors(ParallelConfig)
    if stale := NOT_WEIGHT_SHAPING - factors:
        raise RuntimeError(f"vLLM no longer hashes {sorted(stale)}: drop them from NOT_WEIGHT_SHAPING")
    engine_args = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    return tuple(sorted(((factors - NOT_WEIGHT_SHAPING) | ALSO_WEIGHT_SHAPING) & engine_args))


async def load_lora_adapter(serving_models: Any, name: str, source: str) -> None:
    """Have vLLM's serving layer (its ``OpenAIServingModels``) serve the LoRA adapter at
    ``source`` as ``name``, as its ``/v1/load_lora_adapter`` route does; a name it holds from
    ``source`` already is left as it is, one it holds from elsewhere is loaded in place.
    ``RuntimeError`` with vLLM's reason when it refuses."""
    held = serving_models.lora_requests.get(name)
    if held is not None and held.lora_path == source:
        return
    request = LoadLoRAAdapterRequest(lora_name=name, lora_path=source, load_inplace=held is not None)
    result = await serving_models.load_lora_adapter(request)
    if isinstance(result, ErrorResponse):
        raise RuntimeError(result.error.message)


@functools.cache
def _embedding_request_adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(EmbeddingRequest)


def embedding_request(body: dict[str, Any]) -> Any:
    """vLLM's embedding request of the body (its union of prompt and chat forms)."""
    return _embedding_request_adapter().validate_python(body)


def response_json(response: Any) -> tuple[int, dict[str, Any]]:
    """A Starlette JSON response of vLLM's serving layer (the pooling endpoints answer one)
    as its status and body."""
    return int(response.status_code), json.loads(bytes(response.body))


def client_error_response(exc: Exception) -> ErrorResponse | None:
    """vLLM's own 4xx answer to an error it raised for the request, or None for any other
    exception. vLLM's request validators raise ``VLLMValidationError``, which is no
    ``ValueError``, so pydantic lets it through ``model_validate`` unwrapped."""
    from vllm.exceptions import VLLMClientError

    return create_error_response(exc) if isinstance(exc, VLLMClientError) else None


def engine_args_problem(engine_kwargs: Mapping[str, Any]) -> str | None:
    """What vLLM's own argument parsing (``vllm serve``'s parser, then ``AsyncEngineArgs``)
    refuses in ``engine_kwargs``, None when it takes them: the types and choices of every
    argument, JSON-valued configs by their pydantic models. The model itself is not opened
    here (a hub model would need the network); the engine build checks what depends on it."""
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Refusing(FlexibleArgumentParser):
        def error(self, message: str) -> NoReturn:  # argparse's own exits the process
            raise ValueError(message)

    parser = AsyncEngineArgs.add_cli_args(Refusing(prog="engine_kwargs"))
    flags = parser._option_string_actions  # every option string argparse knows
    argv: list[str] = []
    for key, value in engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None:  # vLLM's default
            continue
        if isinstance(value, bool):
            negated = "--no-" + key.replace("_", "-")
            if value or negated in flags:
                argv.append(flag if value else negated)
        elif isinstance(value, list):
            argv += [flag, *(item if isinstance(item, str) else json.dumps(item) for item in value)]
        else:
            argv += [flag, value if isinstance(value, str) else json.dumps(value)]
    try:
        AsyncEngineArgs.from_cli_args(parser.parse_args(argv))
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None
