"""Streams that survive their engine: a stream cut by a dead engine host or model replica
is continued on a new engine from the prompt and the tokens already sent.

The ingress asks vLLM for token ids with every streamed chunk (``return_token_ids``, and
strips them again unless the client asked). When the stream fails after tokens went out,
``StreamResume.body`` is a legacy completion whose prompt is those token ids (the
prompt's, then the generated ones), with what is left of ``max_tokens``. A greedy request
continues exactly as it would have: the engine sees the same tokens. Its chunks are
rewritten into the client's stream (``continue_chunk``): the first reply's id, object
and creation time, chat deltas for a chat, and usage that counts the whole request.

A stream is resumable only when continuing from token ids is the same request: one choice,
no tools, no structured output, no logprobs, no stop strings (vLLM holds back text that
may start one, so the text sent lags the tokens), no echo. Seeded sampling restarts its
generator at the cut, with the same seed: the continuation is a valid sample, not the one
the first engine would have drawn.
"""

from __future__ import annotations

import json
from typing import Any

from sllm_ray.protocol import Endpoint

# Fields that make a request's continuation something else than the rest of it.
_NOT_RESUMABLE = (
    "tools",
    "tool_choice",
    "functions",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "logprobs",
    "top_logprobs",
    "prompt_logprobs",
    "stop",
    "echo",
    "suffix",
    "best_of",
)
# Sampling fields a legacy completion takes as a chat does.
_SAMPLING = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "stop_token_ids",
    "ignore_eos",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "logit_bias",
    "allowed_token_ids",
    "bad_words",
)
_TOKEN_FIELDS = ("token_ids", "prompt_token_ids")


def resumable(endpoint: Endpoint, body: dict[str, Any]) -> bool:
    """Whether a stream of this request can be continued from its token ids."""
    if not body.get("stream") or int(body.get("n") or 1) != 1:
        return False
    if endpoint is Endpoint.COMPLETIONS and not isinstance(body.get("prompt"), str | list):
        return False
    return not any(body.get(field) for field in _NOT_RESUMABLE)


class StreamResume:
    """One stream's tokens so far, and the request that continues it."""

    def __init__(self, endpoint: Endpoint, body: dict[str, Any]) -> None:
        self.endpoint = endpoint
        self._body = body
        self._client_wants_ids = bool(body.get("return_token_ids"))
        self.prompt_ids: list[int] | None = None
        self.generated: list[int] = []
        # How many of ``generated`` the text sent so far holds: a token that ends inside a
        # character (byte-level vocabularies split them) has no text until the next one.
        self._sent = 0
        self.head: dict[str, Any] | None = None  # the first chunk's id, object, created, model
        self.finished = False
        self.resumed = False

    def forwarded_body(self) -> dict[str, Any]:
        """The request as the engine gets it: with token ids in its chunks."""
        return {**self._body, "return_token_ids": True}

    def outgoing(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """Note a chunk of the first reply; the chunk as the client gets it."""
        if self.head is None and "id" in chunk:
            self.head = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        if self.prompt_ids is None and isinstance(chunk.get("prompt_token_ids"), list):
            self.prompt_ids = chunk["prompt_token_ids"]  # a chat's, on its first chunk
        for choice in chunk.get("choices") or ():
            if self.prompt_ids is None and isinstance(choice.get("prompt_token_ids"), list):
                self.prompt_ids = choice["prompt_token_ids"]  # a completion's
            self.generated.extend(choice.get("token_ids") or ())
            if choice.get("text") or (choice.get("delta") or {}).get("content"):
                self._sent = len(self.generated)
            self.finished = self.finished or choice.get("finish_reason") is not None
        return chunk if self._client_wants_ids else _without_ids(chunk)

    def body(self) -> dict[str, Any] | None:
        """The legacy completion that continues the stream, or None when it cannot be (no
        prompt ids seen, or the stream had finished). Its prompt ends with the last token
        whose text was sent: one that ends inside a character is generated again, since
        vLLM's detokenizer, primed with a prompt that ends mid-character, sends the whole
        prompt's text with the token that completes it."""
        if self.prompt_ids is None or self.finished or self.resumed:
            return None
        del self.generated[self._sent :]
        body: dict[str, Any] = {k: self._body[k] for k in _SAMPLING if k in self._body}
        body |= {
            "model": self._body["model"],
            "prompt": self.prompt_ids + self.generated,
            "stream": True,
            "return_token_ids": True,
        }
        limit = self._body.get("max_completion_tokens") or self._body.get("max_tokens")
        if limit is not None:
            left = int(limit) - len(self.generated)
            if left <= 0:
                return None
            body["max_tokens"] = left
        if "min_tokens" in self._body:
            body["min_tokens"] = max(0, int(self._body["min_tokens"]) - len(self.generated))
        if options := self._body.get("stream_options"):
            body["stream_options"] = options
        return body

    def continue_chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """A chunk of the continuing completion, in the first reply's shape."""
        if self.head is not None:
            chunk = {**chunk, **self.head}
        choices = []
        for choice in chunk.get("choices") or ():
            ids = choice.get("token_ids") or []
            if self.endpoint is Endpoint.CHAT:
                out: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": choice.get("text", "")},
                    "finish_reason": choice.get("finish_reason"),
                    "logprobs": None,
                }
            else:
                out = {k: v for k, v in choice.items() if k != "prompt_token_ids"}
            if self._client_wants_ids:
                out["token_ids"] = ids
            choices.append(out)
        chunk["choices"] = choices
        if usage := chunk.get("usage"):
            chunk["usage"] = self._whole_usage(usage)
        chunk.pop("prompt_token_ids", None)
        return chunk if self._client_wants_ids else _without_ids(chunk)

    def _whole_usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The continuation's usage counts the tokens sent before the cut as its prompt:
        the whole request's counts those as completion tokens."""
        before = len(self.generated)
        prompt = len(self.prompt_ids or ())
        completion = int(usage.get("completion_tokens") or 0) + before
        total = prompt + completion
        return {**usage, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _without_ids(chunk: dict[str, Any]) -> dict[str, Any]:
    chunk = {k: v for k, v in chunk.items() if k not in _TOKEN_FIELDS}
    if "choices" in chunk:
        chunk["choices"] = [{k: v for k, v in c.items() if k not in _TOKEN_FIELDS} for c in chunk["choices"]]
    return chunk


def sse(chunk: dict[str, Any]) -> str:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
