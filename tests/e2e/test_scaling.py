"""Scale from zero, back to zero, and the bound on waiting for a replica."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai


def test_scale_from_zero_then_back_to_zero(client: openai.OpenAI, replicas: Callable) -> None:
    assert "RUNNING" not in replicas("tiny-ephemeral"), "should start with no replica"

    resp = client.chat.completions.create(
        model="tiny-ephemeral",
        messages=[{"role": "user", "content": "wake up"}],
        max_tokens=3,
        extra_body={"ignore_eos": True},
    )
    assert resp.usage.completion_tokens == 3
    assert replicas("tiny-ephemeral").get("RUNNING") == 1

    # keep_alive_s=2 plus Serve's look-back window (11 s): gone well within 90 s.
    deadline = time.monotonic() + 90
    while replicas("tiny-ephemeral") and time.monotonic() < deadline:
        time.sleep(1)
    assert replicas("tiny-ephemeral") == {}


def test_wait_bound_gives_503_with_retry_after(serve_app: str) -> None:
    started = time.monotonic()
    resp = httpx.post(
        f"{serve_app}/v1/chat/completions",
        json={"model": "unplaceable", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    waited = time.monotonic() - started
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "7"
    error = resp.json()["error"]
    assert error["code"] == 503 and "unplaceable" in error["message"]
    assert 2 <= waited < 30

    # The openai client sees the same thing as its own error type.
    client = openai.OpenAI(base_url=f"{serve_app}/v1", api_key="x", max_retries=0)
    try:
        client.completions.create(model="unplaceable", prompt="hi")
    except openai.APIStatusError as exc:
        assert exc.status_code == 503
    else:
        raise AssertionError("expected a 503")

    # Everyone else is still served.
    ok = httpx.get(f"{serve_app}/v1/models")
    assert ok.status_code == 200
