"""A request's JSON body, parsed with bounds, and checked against its model's request limits.

Pure logic, kept apart from the Serve deployment so it is unit-tested without Ray. Every
refusal is a 400 naming the problem: a hostile body (nested thousands deep, a number of
thousands of digits, a lone UTF-16 surrogate) must not reach code that fails on it with a
500 or, for the surrogate, never answers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

from sllm_ray.config import RequestLimits
from sllm_ray.errors import BadRequestError, PayloadTooLargeError

# Deepest nesting of objects and arrays: OpenAI's bodies need a handful of levels (tool
# schemas a few more). Python's parser fails with RecursionError near 1,000.
MAX_JSON_DEPTH = 64
# Longest JSON number, in characters: Python refuses ints beyond 4,300 digits with a
# ValueError, and no field needs more than a 64-bit integer's 20.
MAX_NUMBER_CHARS = 100
# A UTF-16 surrogate alone in a string: JSON's \ud800 escapes (and Python's decoding of
# the raw bytes ED A0 80) produce one; it cannot be encoded as UTF-8 again.
_SURROGATE = re.compile("[\ud800-\udfff]")

# Fields that bound generated tokens, per OpenAI endpoint family.
_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
_LOGPROB_FIELDS = ("logprobs", "top_logprobs", "prompt_logprobs")


def _number(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequestError(
            f"request body has a number of {len(text)} characters; the limit is {MAX_NUMBER_CHARS}"
        )
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    value = float(_number(text))
    if not math.isfinite(value):
        raise BadRequestError(f"request body has a number out of range: {text}")
    return value


def _constant(name: str) -> float:
    raise BadRequestError(f"request body has {name}, which is not JSON")


def _check_tree(body: object) -> None:
    """Depth and strings of a parsed body, without recursion (the body may be deep)."""
    stack: list[tuple[object, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise BadRequestError("request body has a string with a lone UTF-16 surrogate")
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise BadRequestError(f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
        items = [*value, *value.values()] if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)


async def read_body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A request body read as it arrives, refused (413) as soon as it passes ``limit`` bytes:
    a chunked body, or one longer than its ``Content-Length`` says, is never held whole, so
    the ingress's memory stays bounded whatever a client sends."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body (``read_body``'s, so bounded in size) that must be a JSON object,
    within the depth and number bounds and with no lone surrogates."""
    try:
        body = json.loads(raw, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise BadRequestError(f"request body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object")
    _check_tree(body)
    return body


def _count(value: object) -> int | None:
    """A request field's number, when it is one (not a bool); other types are vLLM's to refuse."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _above(field: str, value: int, limit: int, setting: str, what: str = "is") -> None:
    if value > limit:
        raise BadRequestError(
            f"`{field}` {what} {value}; this model allows at most {limit} ({setting})", param=field
        )


def _prompt_sizes(body: dict[str, Any]) -> tuple[str, list[int]] | None:
    """The field holding the prompts and each prompt's length: characters of text, or token
    ids. A chat is one prompt, its messages' text together."""
    if isinstance(messages := body.get("messages"), list):
        chars = 0
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            parts = content if isinstance(content, list) else [content]
            for part in parts:
                text = part.get("text") if isinstance(part, dict) else part
                chars += len(text) if isinstance(text, str) else 0
        return "messages", [chars]
    field = "input" if "input" in body else "prompt"  # an embedding request's, or a completion's
    prompt = body.get(field)
    if isinstance(prompt, str):
        return field, [len(prompt)]
    if isinstance(prompt, list):
        if prompt and all(_count(item) is not None for item in prompt):  # one prompt of token ids
            return field, [len(prompt)]
        return field, [len(item) if isinstance(item, str | list) else 0 for item in prompt]
    return None


def check_request(
    body: dict[str, Any], limits: RequestLimits, max_tokens_limit: int | None
) -> dict[str, Any]:
    """Hold a request to its model's limits (400 above any); the body to forward, with
    ``max_tokens_limit`` filled in when the request bounds no tokens."""
    for field, limit in (("n", limits.n), ("best_of", limits.best_of)):
        if (value := _count(body.get(field))) is not None:
            _above(field, value, limit, f"request_limits.{field}")
    for field in _LOGPROB_FIELDS:
        if (value := _count(body.get(field))) is not None:
            _above(field, value, limits.logprobs, "request_limits.logprobs")
    if isinstance(stop := body.get("stop"), list):
        _above("stop", len(stop), limits.stop, "request_limits.stop", "has entries:")
    if (sizes := _prompt_sizes(body)) is not None:
        field, lengths = sizes
        if field != "messages":
            _above(field, len(lengths), limits.prompts, "request_limits.prompts", "has prompts:")
        longest = max(lengths, default=0)
        _above(field, longest, limits.prompt_chars, "request_limits.prompt_chars", "has a prompt of length")
    cap, setting = limits.max_tokens, "request_limits.max_tokens"
    if max_tokens_limit is not None and max_tokens_limit < cap:
        cap, setting = max_tokens_limit, "max_tokens_limit"
    given = {f: v for f in _MAX_TOKEN_FIELDS if (v := _count(body.get(f))) is not None}
    for field, value in given.items():
        _above(field, value, cap, setting)
    if max_tokens_limit is None or any(body.get(f) is not None for f in _MAX_TOKEN_FIELDS):
        return body
    return {**body, "max_tokens": max_tokens_limit}
