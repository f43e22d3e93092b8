"""One model's vLLM engine, answering OpenAI requests through vLLM's own serving layer.

Responses come from vLLM's ``OpenAIServingChat``, ``OpenAIServingCompletion`` and (a
model on vLLM's pooling runner) ``ServingEmbedding``, so chat templates, sampling
parameters, ``stop``, ``logprobs``, ``response_format`` and embeddings' ``encoding_format``
and ``dimensions`` behave exactly as in ``vllm serve``; LoRA adapters are loaded as its
``/v1/load_lora_adapter`` loads them, and a request naming one is served with it.

By default vLLM's ``AsyncLLM`` runs its engine core in a process it spawns, which imports
torch and vLLM again; ``in_process=True`` (what engine hosts use) keeps it in this process
(``inproc_core.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from sllm_ray.config import engine_workers
from sllm_ray.engine import vllm_compat as vc
from sllm_ray.engine.inproc_core import inproc_engine_core
from sllm_ray.engine.records import EngineSpec, LoadReport
from sllm_ray.engine.store_loader import worker_load_report
from sllm_ray.errors import validation_error
from sllm_ray.protocol import Endpoint, ResponseHead

logger = logging.getLogger(__name__)


class EngineConfigError(ValueError):
    """The engine arguments are not ones vLLM accepts."""


def build_vllm_args(
    model: str, model_source: str, engine_kwargs: dict[str, Any]
) -> tuple[Any, argparse.Namespace]:
    """Turn a model's config into vLLM's engine args and the flat namespace its
    serving layer reads (the same shape ``vllm serve`` builds from its command line)."""
    kwargs = dict(engine_kwargs)
    kwargs.setdefault("served_model_name", [model])
    try:
        engine_args = vc.AsyncEngineArgs(model=model_source, **kwargs)
    except TypeError as exc:
        raise EngineConfigError(f"invalid engine_kwargs for model {model!r}: {exc}") from exc
    frontend_args = vc.FrontendArgs()
    namespace = argparse.Namespace(**(vars(frontend_args) | vars(engine_args)))
    return engine_args, namespace


class OpenAIEngine:
    """One model's vLLM ``AsyncLLM`` with vLLM's OpenAI serving objects on top."""

    def __init__(
        self,
        model: str,
        model_source: str,
        engine_kwargs: dict[str, Any],
        *,
        in_process: bool = False,
        placement_group: Any = None,
    ) -> None:
        self.model = model
        self._in_process = in_process
        self._placement_group = placement_group
        if in_process and engine_workers(engine_kwargs) == 1:
            # The model worker in this process too.
            engine_kwargs = {"distributed_executor_backend": "uni", **engine_kwargs}
        elif placement_group is not None:
            # Several workers: Ray actors in the replica's placement group, one per bundle.
            engine_kwargs = {"distributed_executor_backend": "ray", **engine_kwargs}
        self._engine_args, self._args = build_vllm_args(model, model_source, engine_kwargs)
        self._llm: Any = None
        self._chat: Any = None
        self._completion: Any = None
        self._embedding: Any = None
        self._models: Any = None
        self.phases: dict[str, float] = {}

    @classmethod
    def prepare_process(cls) -> None:
        vc.prepare_engine_process()

    @classmethod
    def for_host(cls, spec: EngineSpec) -> OpenAIEngine:
        group = None
        if spec.placement_group_id is not None:  # several workers, on Ray (untested on GPUs)
            from sllm_ray import ray_compat

            group = ray_compat.join_placement_group(spec.gcs_address, spec.placement_group_id)
        return cls(
            spec.model, spec.engine_source(), spec.vllm_kwargs(), in_process=True, placement_group=group
        )

    @classmethod
    def engine_args_problem(cls, engine_kwargs: dict[str, Any]) -> str | None:
        """Arguments this vLLM does not have, or values its own argument parsing refuses."""
        known = {f.name for f in dataclasses.fields(vc.AsyncEngineArgs)}
        if unknown := sorted(set(engine_kwargs) - known):
            return f"unknown vLLM engine arguments {unknown}"
        return vc.engine_args_problem(engine_kwargs)

    async def start(self) -> LoadReport | None:
        from starlette.datastructures import State

        started = mark = time.perf_counter()
        logger.info("building vLLM engine for %s from %s", self.model, self._args.model)

        def lap(phase: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            self.phases[phase] = now - mark
            mark = now

        vc.cache_model_info(self._engine_args.model)
        vllm_config = self._engine_args.create_engine_config(usage_context=vc.UsageContext.OPENAI_API_SERVER)
        if self._placement_group is not None:  # untested on GPUs
            vllm_config.parallel_config.placement_group = self._placement_group
        lap("config_s")
        with inproc_engine_core() if self._in_process else contextlib.nullcontext():
            self._llm = vc.AsyncLLM.from_vllm_config(
                vllm_config=vllm_config,
                usage_context=vc.UsageContext.OPENAI_API_SERVER,
                enable_log_requests=self._engine_args.enable_log_requests,
                disable_log_stats=self._engine_args.disable_log_stats,
            )
        lap("engine_core_s")  # weights, KV cache, warm-up
        state = State()
        tasks = await self._llm.get_supported_tasks()
        args = vc.with_fingerprint(self._args, vllm_config)
        await vc.init_app_state(engine_client=self._llm, state=state, args=args, supported_tasks=tasks)
        lap("serving_layer_s")
        self._chat = getattr(state, "openai_serving_chat", None)
        self._completion = getattr(state, "openai_serving_completion", None)
        self._embedding = getattr(state, "serving_embedding", None)
        self._models = state.openai_serving_models
        seconds = time.perf_counter() - started
        logger.info("vLLM engine for %s ready in %.2f s %s", self.model, seconds, self.phases)
        if self._engine_args.load_format != "sllm_store":
            return None
        reports = await self._llm.collective_rpc(worker_load_report)
        return LoadReport.merge([LoadReport.from_json(r) for r in reports if r])

    async def load_adapter(self, name: str, source: str) -> None:
        await vc.load_lora_adapter(self._models, name, source)
        logger.info("LoRA adapter %s of %s loaded from %s", name, self.model, source)

    async def check_health(self) -> None:
        await self._llm.check_health()

    @property
    def can_sleep(self) -> bool:
        """Whether vLLM's sleep mode is on (``enable_sleep_mode``; GPUs only)."""
        return bool(self._engine_args.enable_sleep_mode)

    async def sleep(self) -> None:
        """Idle until woken: with sleep mode (GPU, untested here), vLLM's level 1 moves the
        weights to host memory and drops the KV cache, freeing the accelerator; without
        it the engine stays as built, idle."""
        if self.can_sleep:
            await self._llm.sleep(level=1)

    async def wake(self) -> None:
        if self.can_sleep:
            await self._llm.wake_up()

    @staticmethod
    def _validated(validate: Any, body: dict[str, Any]) -> Any:
        """vLLM's request of the body, or the 400 refusing it."""
        try:
            return validate(body)
        except ValidationError as exc:
            return ResponseHead(400, validation_error(exc.errors()).body())
        except Exception as exc:  # vLLM's validators raise their own errors past pydantic
            refused = vc.client_error_response(exc)
            if refused is None:
                raise
            return ResponseHead(refused.error.code, refused.model_dump(mode="json"))

    async def _embed(self, body: dict[str, Any]) -> ResponseHead:
        """An embeddings request, through vLLM's ``ServingEmbedding``: its JSON response (the
        ingress refuses ``encoding_format: bytes``, whose body is not JSON)."""
        request = self._validated(vc.embedding_request, body)
        if isinstance(request, ResponseHead):
            return request
        try:
            response = await self._embedding(request, None)
        except Exception as exc:  # vLLM raises its validation errors from here
            result = vc.create_error_response(exc)
            return ResponseHead(result.error.code, result.model_dump(mode="json"))
        if isinstance(response, vc.ErrorResponse):
            return ResponseHead(response.error.code, response.model_dump(mode="json"))
        return ResponseHead(*vc.response_json(response))

    def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    async def generate(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[ResponseHead | str]:
        """Yield a ``ResponseHead`` and, for a stream, vLLM's SSE events."""
        if endpoint is Endpoint.EMBEDDINGS:
            yield await self._embed(body)
            return
        if endpoint is Endpoint.CHAT:
            request_cls, create = vc.ChatCompletionRequest, self._chat.create_chat_completion
        else:
            request_cls, create = vc.CompletionRequest, self._completion.create_completion
        request = self._validated(request_cls.model_validate, body)
        if isinstance(request, ResponseHead):
            yield request
            return
        try:
            result = await create(request, None)
        except Exception as exc:  # vLLM raises its validation errors from here
            result = vc.create_error_response(exc)
        if isinstance(result, vc.ErrorResponse):
            yield ResponseHead(result.error.code, result.model_dump(mode="json"))
        elif isinstance(result, vc.ChatCompletionResponse | vc.CompletionResponse):
            yield ResponseHead(200, result.model_dump(mode="json", exclude_unset=False))
        else:
            yield ResponseHead(200)
            async for event in result:
                yield event
