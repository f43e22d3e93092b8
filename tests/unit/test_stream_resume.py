"""The continuation of a stream whose engine was lost (``api/resume.py``)."""

from __future__ import annotations

import pytest

from sllm_ray.api.resume import StreamResume, resumable
from sllm_ray.protocol import Endpoint

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, True),
        ({"n": 1, "temperature": 0.7, "seed": 3}, True),
        ({"stream": False}, False),
        ({"n": 2}, False),
        ({"stop": ["\n"]}, False),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, False),
        ({"response_format": {"type": "json_object"}}, False),
        ({"logprobs": True}, False),
    ],
)
def test_only_streams_whose_continuation_is_the_same_request_are_resumable(
    extra: dict, expected: bool
) -> None:
    assert resumable(Endpoint.CHAT, {**CHAT, **extra}) is expected


def _chat_chunk(ids: list[int], text: str, finish: str | None = None, **top: object) -> dict:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish, "token_ids": ids}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [choice],
        **top,
    }


def test_a_chat_continues_as_a_completion_of_its_token_ids_in_the_chats_shape() -> None:
    resume = StreamResume(Endpoint.CHAT, {**CHAT, "max_tokens": 10, "temperature": 0, "seed": 5, "user": "u"})
    assert resume.forwarded_body()["return_token_ids"] is True
    sent = resume.outgoing(_chat_chunk([11], "a", prompt_token_ids=[1, 2, 3]))
    assert "prompt_token_ids" not in sent and "token_ids" not in sent["choices"][0]  # the client did not ask
    resume.outgoing(_chat_chunk([12, 13], " b"))
    body = resume.body()
    assert body == {
        "model": "m",
        "prompt": [1, 2, 3, 11, 12, 13],
        "max_tokens": 7,
        "temperature": 0,
        "seed": 5,
        "stream": True,
        "return_token_ids": True,
    }
    resume.resumed = True
    assert resume.body() is None  # once per request
    piece = {"id": "cmpl-9", "object": "text_completion", "created": 99, "model": "m"}
    piece["choices"] = [{"index": 0, "text": " c", "finish_reason": "length", "token_ids": [14]}]
    piece["usage"] = {"prompt_tokens": 6, "completion_tokens": 7, "total_tokens": 13}
    out = resume.continue_chunk(piece)
    assert out["id"] == "chatcmpl-1" and out["object"] == "chat.completion.chunk" and out["created"] == 7
    assert out["choices"] == [
        {"index": 0, "delta": {"content": " c"}, "finish_reason": "length", "logprobs": None}
    ]
    assert out["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13}


def test_a_completion_keeps_its_ids_when_asked_and_a_finished_or_spent_stream_is_not_continued() -> None:
    body = {"model": "m", "prompt": "hi", "stream": True, "max_tokens": 2, "return_token_ids": True}
    resume = StreamResume(Endpoint.COMPLETIONS, body)
    chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "m"}
    first = {**chunk, "choices": [{"index": 0, "text": "a", "token_ids": [5], "prompt_token_ids": [1]}]}
    assert resume.outgoing(first)["choices"][0]["token_ids"] == [5]
    resume.outgoing({**chunk, "choices": [{"index": 0, "text": "b", "token_ids": [6]}]})
    assert resume.body() is None  # max_tokens spent
    done = StreamResume(Endpoint.COMPLETIONS, {**body, "max_tokens": 9})
    done.outgoing(
        {**chunk, "choices": [{"index": 0, "text": "a", "token_ids": [5], "finish_reason": "stop"}]}
    )
    assert done.body() is None  # it had finished
    unseen = StreamResume(Endpoint.COMPLETIONS, body)
    assert unseen.body() is None  # no prompt ids seen: nothing to go on from


def test_tokens_whose_text_is_not_sent_yet_are_generated_again() -> None:
    """A byte-level token that ends inside a character streams no text; the continuation's
    prompt stops before it (vLLM would send the prompt's text otherwise)."""
    body = {"model": "m", "prompt": "hi", "stream": True, "max_tokens": 8}
    resume = StreamResume(Endpoint.COMPLETIONS, body)
    chunk = {"id": "c", "object": "text_completion", "created": 1, "model": "m"}
    resume.outgoing(
        {**chunk, "choices": [{"index": 0, "text": "a", "token_ids": [5], "prompt_token_ids": [1]}]}
    )
    resume.outgoing({**chunk, "choices": [{"index": 0, "text": "", "token_ids": [164]}]})
    resume.outgoing({**chunk, "choices": [{"index": 0, "text": "", "token_ids": [228]}]})
    continued = resume.body()
    assert continued is not None
    assert continued["prompt"] == [1, 5] and continued["max_tokens"] == 7
    usage = {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}
    last = resume.continue_chunk({**chunk, "id": "other", "choices": [], "usage": usage})
    assert last["usage"] == {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9}
