"""Scale from zero, back to zero, and the bound on waiting for a replica."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
from support import replica_record, wait_for


def _chat(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="tiny-ephemeral",
        messages=[{"role": "user", "content": "wake up"}],
        max_tokens=3,
        extra_body={"ignore_eos": True},
    )
    assert resp.usage.completion_tokens == 3


def _sleeping(admin: httpx.Client) -> list[str]:
    return [s["model"] for n in admin.get("/status").json()["nodes"] for s in n["engine_hosts"]["sleeping"]]


def test_scale_from_zero_then_back_to_zero_and_a_hot_start(
    client: openai.OpenAI, admin: httpx.Client, replicas: Callable
) -> None:
    assert "RUNNING" not in replicas("tiny-ephemeral"), "should start with no replica"

    _chat(client)
    assert replicas("tiny-ephemeral").get("RUNNING") == 1
    built = replica_record("tiny-ephemeral")["host"]
    assert built["wakes"] == 0

    # keep_alive_s=2 plus Serve's look-back window (11 s): gone well within 90 s.
    wait_for(lambda: replicas("tiny-ephemeral") == {}, 90, "tiny-ephemeral to scale to zero", interval_s=1)

    # Its engine went to sleep in the node's pool; the next replica wakes it, no build.
    wait_for(lambda: "tiny-ephemeral" in _sleeping(admin), 30, "its engine asleep in the pool")
    _chat(client)
    woken = replica_record("tiny-ephemeral")["host"]
    assert woken["host_id"] == built["host_id"] and woken["wakes"] == 1
    assert woken["engine_ready_at"] == built["engine_ready_at"] < woken["woke_at"]
    assert "tiny-ephemeral" not in _sleeping(admin)


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
