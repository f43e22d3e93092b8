"""The OpenAI API end to end: official `openai` client -> Serve ingress -> vLLM replica."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from support import replica_record, wait_for

MODEL = "tiny"
MESSAGES = [{"role": "user", "content": "Tell me about asyncio."}]
# A random-weight model rarely emits end-of-sequence; ignore_eos makes lengths exact.
EXACT = {"ignore_eos": True}


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list().data}
    assert ids == {"tiny", "tiny-ephemeral", "unplaceable"}
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_completion(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12, extra_body=EXACT)
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert resp.usage.completion_tokens == 12
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 12


def test_chat_completion_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert text
    assert finish == ["length"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    # Chunks are forwarded as vLLM yields them, not gathered into one (vLLM itself merges
    # tokens when the reader lags, so the count per token is not fixed).
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2


def test_completion_and_stream(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL, prompt="The event loop", max_tokens=8, extra_body=EXACT)
    assert resp.object == "text_completion"
    assert resp.usage.completion_tokens == 8
    assert resp.choices[0].text

    stream = client.completions.create(
        model=MODEL,
        prompt="The event loop",
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT,
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices)
    assert chunks[-1].usage.completion_tokens == 8


def test_raw_sse_stream_ends_with_done(serve_app: str) -> None:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 5, "stream": True, **EXACT}
    with httpx.stream("POST", f"{serve_app}/v1/completions", json=body, timeout=300) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)
    assert len(events) >= 3  # several token events, then [DONE]


def test_a_client_that_goes_away_aborts_its_request(serve_app: str, client: openai.OpenAI) -> None:
    before = replica_record(MODEL)["host"]["requests"]
    body = {"model": MODEL, "prompt": "Once", "max_tokens": 400, "stream": True, **EXACT}
    with httpx.Client(timeout=60) as http, http.stream("POST", f"{serve_app}/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    # The host cancelled the request (which aborts it in vLLM) and serves the next one.

    def aborted() -> dict[str, int] | None:
        requests = replica_record(MODEL)["host"]["requests"]
        return requests if requests["aborted"] != before["aborted"] else None

    after = wait_for(aborted, 20, "the host to abort the request", interval_s=0.2)
    assert after["aborted"] == before["aborted"] + 1
    reply = client.completions.create(model=MODEL, prompt="Once", max_tokens=4, extra_body=EXACT)
    assert reply.usage.completion_tokens == 4


def test_sampling_parameters_come_from_vllm(client: openai.OpenAI) -> None:
    greedy = dict(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0.0, extra_body=EXACT)
    first = client.chat.completions.create(**greedy).choices[0].message.content
    assert client.chat.completions.create(**greedy).choices[0].message.content == first

    # `stop` cuts the greedy output before the stop string.
    stop = first[len(first) // 2 :][:3]
    assert stop.strip(), first
    stopped = client.chat.completions.create(**{**greedy, "stop": [stop]})
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == first[: first.index(stop)]

    # logprobs: one entry per generated token, with the requested alternatives.
    lp = client.chat.completions.create(**{**greedy, "max_tokens": 4, "logprobs": True, "top_logprobs": 2})
    content = lp.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(t.top_logprobs) == 2 for t in content)


def test_python_handle(serve_app: str) -> None:
    from ray import serve

    handle = serve.get_app_handle("sllm")
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, **EXACT}
    resp = handle.chat.remote(body).result()
    assert resp["usage"]["completion_tokens"] == 4

    chunks = list(handle.options(stream=True).chat.remote({**body, "stream": True}))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    completion = handle.completions.remote(
        {"model": MODEL, "prompt": "hi", "max_tokens": 3, **EXACT}
    ).result()
    assert completion["usage"]["completion_tokens"] == 3
    assert {m["id"] for m in handle.models.remote().result()["data"]} >= {MODEL}


def _error(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    assert body["error"]["code"] == resp.status_code
    return body["error"]


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"messages": MESSAGES}).encode(), 404, "model"),
        (json.dumps({"model": "no-such-model", "messages": MESSAGES}).encode(), 404, "model"),
        (json.dumps({"model": MODEL, "messages": MESSAGES, "temperature": -1}).encode(), 400, "temperature"),
        (
            json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": "many"}).encode(),
            400,
            "max_tokens",
        ),
        (json.dumps({"model": MODEL, "messages": MESSAGES, "top_p": 7}).encode(), 400, "top_p"),
        (json.dumps({"model": MODEL}).encode(), 400, "messages"),
    ],
)
def test_bad_input_gets_openai_error(serve_app: str, payload: bytes, status: int, param: str | None) -> None:
    resp = httpx.post(
        f"{serve_app}/v1/chat/completions",
        content=payload,
        headers={"content-type": "application/json"},
        timeout=300,
    )
    assert resp.status_code == status, resp.text
    error = _error(resp)
    if param is not None:
        assert error["param"] == param


def test_errors_through_openai_client_and_server_keeps_serving(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, temperature=-2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, n=0)
    ok = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, extra_body=EXACT)
    assert ok.usage.completion_tokens == 2


def test_health_and_unknown_route(serve_app: str) -> None:
    assert httpx.get(f"{serve_app}/health").json() == {"status": "ok"}
    resp = httpx.get(f"{serve_app}/v1/nothing-here")
    assert resp.status_code == 404
    _error(resp)


def test_vllms_own_validation_errors_are_400_with_its_message(client: openai.OpenAI) -> None:
    """vLLM's request validators raise its own errors past pydantic, in the engine host
    (they were 500s carrying Ray's traceback)."""
    with pytest.raises(openai.BadRequestError, match="non-empty") as empty:
        client.completions.create(model=MODEL, prompt="", max_tokens=4)
    assert empty.value.status_code == 400
    assert "pid=" not in empty.value.message and "Traceback" not in empty.value.message
    tools = [{"type": "function", "function": {"name": "known", "parameters": {"type": "object"}}}]
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "unknown"}},
            max_tokens=4,
        )
    reply = client.completions.create(model=MODEL, prompt="Once", max_tokens=2, extra_body=EXACT)
    assert reply.choices[0].text
