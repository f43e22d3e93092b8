"""A fake engine: deterministic tokens in OpenAI's shapes, no vLLM, no weights.

Injected with ``AppConfig.engine_cls = "sllm_ray.testing.fake_engine:FakeEngine"`` it
drives the Serve-level suite (``tests/serve``): the real ingress, Serve, replicas,
channel, launcher and hosts, only the engine is fake. Its engine arguments:

- ``fake_build_s``: seconds ``start`` takes (default 0.05);
- ``fake_token_s``: seconds per token, between streamed ones (a whole answer: all of them before
  it; default 0);
- ``fake_fail``: ``start`` raises ``RuntimeError`` with this message (a broken engine);
- ``fake_fail_while``: a path; ``start`` raises ``RuntimeError`` while it exists (an
  engine broken until something outside it is mended: a retry of it then starts);
- ``max_model_len``: prompts longer than this (in characters) get vLLM's 400;
- ``enable_lora``, ``max_lora_rank``, ``max_loras``: taken; a request names the model or an
  adapter loaded (``load_adapter``), else it gets vLLM's 404, and the reply names it.

The n-th token of every reply is ``tok<n>`` (token id ``100 + n``); ``max_tokens``
(default 16) of them. A prompt of token ids (``[1, 100, 101]``) continues after the tokens
of a reply it holds (``tok2``): the way a resumed stream continues its greedy answer.
With ``return_token_ids`` the chunks carry the ids, as vLLM's do.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sllm_ray.engine.records import EngineSpec, LoadReport
from sllm_ray.protocol import SSE_DONE, Endpoint, ResponseHead

# What ``AppConfig.engine_cls`` names to inject this engine.
FAKE_ENGINE = f"{__name__}:FakeEngine"
PRINTING_FAKE_ENGINE = f"{__name__}:PrintingFakeEngine"
ARGS = (
    "fake_build_s",
    "fake_token_s",
    "fake_fail",
    "fake_fail_while",
    "max_model_len",
    "enforce_eager",
    "kv_cache_memory_bytes",
    "enable_lora",
    "max_lora_rank",
    "max_loras",
)


FIRST_TOKEN_ID = 100


def _error(message: str, param: str | None = None, status: int = 400) -> ResponseHead:
    kind = "NotFoundError" if status == 404 else "BadRequestError"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return ResponseHead(status, body)


class FakeEngine:
    def __init__(self, spec: EngineSpec) -> None:
        self.model = spec.model
        self._args = spec.engine_kwargs
        self._source = spec.engine_source()
        self.phases: dict[str, float] = {}
        self.asleep = False
        self.adapters: dict[str, str] = {}  # name -> source, as loaded

    @classmethod
    def prepare_process(cls) -> None:
        pass  # nothing to import ahead of demand

    @classmethod
    def for_host(cls, spec: EngineSpec) -> FakeEngine:
        return cls(spec)

    @classmethod
    def engine_args_problem(cls, engine_kwargs: dict[str, Any]) -> str | None:
        """Unknown names, and the fake's own seconds that are not numbers (as vLLM's parser
        refuses a value of the wrong type)."""
        if unknown := sorted(set(engine_kwargs) - set(ARGS)):
            return f"unknown vLLM engine arguments {unknown}"
        for key in ("fake_build_s", "fake_token_s"):
            value = engine_kwargs.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"argument --{key.replace('_', '-')}: invalid float value: {value!r}"
        return None

    async def start(self) -> LoadReport | None:
        started = time.perf_counter()
        await asyncio.sleep(float(self._args.get("fake_build_s", 0.05)))
        if "fake_fail" in self._args:
            raise RuntimeError(str(self._args["fake_fail"]))
        if "fake_fail_while" in self._args and Path(self._args["fake_fail_while"]).exists():
            raise RuntimeError(f"{self._args['fake_fail_while']} exists")
        self.phases["engine_core_s"] = time.perf_counter() - started
        return None

    async def load_adapter(self, name: str, source: str) -> None:
        self.adapters[name] = source

    async def sleep(self) -> None:
        self.asleep = True

    async def wake(self) -> None:
        self.asleep = False
        self.adapters: dict[str, str] = {}  # name -> source, as loaded

    async def check_health(self) -> None:
        if self.asleep:
            raise RuntimeError("the engine is asleep")

    def shutdown(self) -> None:
        pass

    async def generate(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[ResponseHead | str]:
        served = body.get("model") or self.model
        if served != self.model and served not in self.adapters:
            yield _error(f"The model `{served}` does not exist.", "model", 404)
            return
        prompt = body.get("prompt") if endpoint is Endpoint.COMPLETIONS else body.get("messages")
        if not prompt:
            yield _error("the prompt is empty", "prompt" if endpoint is Endpoint.COMPLETIONS else "messages")
            return
        limit = self._args.get("max_model_len")
        if limit is not None and len(json.dumps(prompt)) > int(limit):
            yield _error(f"the prompt is longer than max_model_len {limit}", "prompt")
            return
        count = int(body.get("max_tokens") or 16)
        prompt_ids = prompt if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) else [1]
        first = sum(t >= FIRST_TOKEN_ID for t in prompt_ids)
        tokens = [f"tok{i}" for i in range(first, first + count)]
        with_ids = bool(body.get("return_token_ids"))
        rid = f"fake-{uuid.uuid4().hex[:12]}"
        kind = "chat.completion" if endpoint is Endpoint.CHAT else "text_completion"
        base = {"id": rid, "created": int(time.time()), "model": served}
        usage = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": count,
            "total_tokens": count + len(prompt_ids),
        }
        delay = float(self._args.get("fake_token_s", 0))
        if not body.get("stream"):
            await asyncio.sleep(delay * count)
            text = " ".join(tokens)
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
            if endpoint is Endpoint.CHAT:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            yield ResponseHead(200, {**base, "object": kind, "choices": [choice], "usage": usage})
            return
        yield ResponseHead(200)
        chunk_kind = "chat.completion.chunk" if endpoint is Endpoint.CHAT else kind
        for i, token in enumerate(tokens):
            if delay:
                await asyncio.sleep(delay)
            piece = token if i + first == 0 else " " + token
            finish = "length" if i == count - 1 else None
            chunk: dict[str, Any] = {**base, "object": chunk_kind}
            if endpoint is Endpoint.CHAT:
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
                if with_ids and i == 0:
                    chunk["prompt_token_ids"] = prompt_ids
            else:
                choice = {"index": 0, "text": piece, "finish_reason": finish}
                if with_ids and i == 0:
                    choice["prompt_token_ids"] = prompt_ids
            if with_ids:
                choice["token_ids"] = [FIRST_TOKEN_ID + first + i]
            chunk["choices"] = [choice]
            yield f"data: {json.dumps(chunk)}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**base, 'object': chunk_kind, 'choices': [], 'usage': usage})}\n\n"
        yield SSE_DONE


class PrintingFakeEngine(FakeEngine):
    """The fake engine, printing to stdout as it prepares and as it builds, as vLLM's
    logging does: the launcher's stdout is its conversation with the pool."""

    @classmethod
    def prepare_process(cls) -> None:
        print("a plugin's banner, printed while the launcher prepares", flush=True)

    @classmethod
    def for_host(cls, spec: EngineSpec) -> FakeEngine:
        print(f"building {spec.model}", flush=True)
        return cls(spec)
