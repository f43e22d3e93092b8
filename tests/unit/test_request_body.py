"""Request bodies: JSON parsed within bounds, and requests held to their model's limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from sllm_ray.api.request_body import MAX_JSON_DEPTH, check_request, parse_json_body, read_body
from sllm_ray.config import RequestLimits
from sllm_ray.errors import BadRequestError, PayloadTooLargeError

LIMITS = RequestLimits()


@pytest.mark.parametrize("raw", [b"{oops", b"\xff\xfe", b"[]", b'"text"', b""])
def test_bodies_that_are_not_json_objects_are_400(raw: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_json_body(raw)


async def _chunks(pieces: Iterable[bytes], read: list[int]) -> AsyncIterator[bytes]:
    for piece in pieces:
        read.append(len(piece))
        yield piece


def test_a_body_is_refused_once_it_passes_the_limit_without_reading_the_rest() -> None:
    read: list[int] = []
    endless = (b"x" * 10 for _ in range(10**9))  # a chunked body that never ends
    with pytest.raises(PayloadTooLargeError, match="limit of 50 bytes"):
        asyncio.run(read_body(_chunks(endless, read), 50))
    assert sum(read) == 60  # the chunk that passed the limit, nothing after it
    assert asyncio.run(read_body(_chunks([b'{"a"', b": 1}"], []), 50)) == b'{"a": 1}'


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nested deeper"),  # RecursionError in json
        (b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}", "nested deeper"),
        (b'{"max_tokens": ' + b"9" * 5001 + b"}", "number of 5001 characters"),  # int() refuses
        (b'{"temperature": 1' + b"0" * 500 + b".5}", "number of"),
        (b'{"temperature": 1e999}', "out of range"),
        (b'{"temperature": NaN}', "NaN"),
        (b'{"temperature": -Infinity}', "-Infinity"),
        (b'{"model": "\\ud800"}', "surrogate"),
        (b'{"logprobs": true, "top_logprobs": "\xed\xa0\x80"}', "surrogate"),  # raw bytes
        (b'{"messages": [{"\\udfff": 1}]}', "surrogate"),  # in a key
    ],
)
def test_hostile_json_is_400_naming_the_problem(raw: bytes, fragment: str) -> None:
    with pytest.raises(BadRequestError, match=fragment) as caught:
        parse_json_body(raw)
    assert caught.value.status == 400


def test_ordinary_json_passes() -> None:
    body = parse_json_body(b'{"a": [1, -2.5e3, "\\u00e9\\ud83d\\ude00"], "b": {"c": null}}')
    assert body == {"a": [1, -2500.0, "é😀"], "b": {"c": None}}
    nested = b'{"a": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    assert parse_json_body(nested)


def test_max_tokens_limit_caps_and_fills_in() -> None:
    assert check_request({"max_tokens": 5}, LIMITS, None) == {"max_tokens": 5}
    assert check_request({}, LIMITS, 16) == {"max_tokens": 16}
    assert check_request({"max_tokens": 16}, LIMITS, 16) == {"max_tokens": 16}
    assert check_request({"max_completion_tokens": 8}, LIMITS, 16) == {"max_completion_tokens": 8}
    for field in ("max_tokens", "max_completion_tokens"):
        with pytest.raises(BadRequestError, match="max_tokens_limit") as info:
            check_request({field: 17}, LIMITS, 16)
        assert info.value.param == field


@pytest.mark.parametrize(
    ("body", "param", "setting"),
    [
        ({"n": 17}, "n", "request_limits.n"),
        ({"best_of": 17}, "best_of", "request_limits.best_of"),
        ({"logprobs": 21}, "logprobs", "request_limits.logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "request_limits.logprobs"),
        ({"prompt_logprobs": 21}, "prompt_logprobs", "request_limits.logprobs"),
        ({"stop": ["x"] * 17}, "stop", "request_limits.stop"),
        ({"prompt": ["x"] * 65}, "prompt", "request_limits.prompts"),
        ({"prompt": "x" * 131_073}, "prompt", "request_limits.prompt_chars"),
        ({"prompt": [1] * 131_073}, "prompt", "request_limits.prompt_chars"),  # token ids
        ({"prompt": [[1] * 131_073]}, "prompt", "request_limits.prompt_chars"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 131_073}]}]},
            "messages",
            "request_limits.prompt_chars",
        ),
        ({"max_tokens": 32_769}, "max_tokens", "request_limits.max_tokens"),
    ],
)
def test_requests_beyond_the_limits_are_400(body: dict, param: str, setting: str) -> None:
    with pytest.raises(BadRequestError, match=setting) as caught:
        check_request(body, LIMITS, None)
    assert caught.value.param == param


def test_requests_within_the_limits_pass_unchanged() -> None:
    body = {
        "n": 16,
        "best_of": 16,
        "logprobs": 20,
        "stop": ["a"] * 16,
        "prompt": ["x" * 100] * 64,
        "max_tokens": 32_768,
    }
    assert check_request(body, LIMITS, None) == body
    chat = {"messages": [{"role": "user", "content": "x" * 131_072}], "logprobs": True, "top_logprobs": 20}
    assert check_request(chat, LIMITS, None) == chat
    # Values of the wrong type are vLLM's to refuse, with its own message.
    odd = {"n": "x", "stop": "s", "logprobs": True, "prompt": 7}
    assert check_request(odd, LIMITS, None) == odd


def test_a_model_sets_its_own_limits() -> None:
    tight = RequestLimits(n=2, prompts=1)
    with pytest.raises(BadRequestError, match="at most 2"):
        check_request({"n": 3}, tight, None)
    with pytest.raises(BadRequestError, match="has prompts: 2"):
        check_request({"prompt": ["a", "b"]}, tight, None)
