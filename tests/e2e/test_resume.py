"""Streams that survive their engine, with vLLM: the engine host SIGKILLed mid-stream, the
replica takes a new host, and the ingress continues the stream from the token ids already
sent. A greedy answer comes out exactly as an uninterrupted one."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import openai
from app_under_test import model_body
from support import replica_record

MODEL = "tiny-resume"
# A random-weight model rarely emits end-of-sequence; ignore_eos makes lengths exact.
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}
TOKENS = 48


def _read_killing_host(stream: Any) -> tuple[str, Any, bool]:
    """The text of ``stream``, its last chunk and whether the host was killed meanwhile
    (after the first tokens)."""
    pid, text, last, seen = replica_record(MODEL)["host"]["pid"], "", None, 0
    for chunk in stream:
        last = chunk
        if chunk.choices:
            choice = chunk.choices[0]
            text += (choice.delta.content if hasattr(choice, "delta") else choice.text) or ""
            seen += 1
        if seen == 4 and pid:
            os.kill(pid, signal.SIGKILL)
            pid = 0
    return text, last, pid == 0


def test_a_greedy_stream_cut_by_its_engines_death_continues_exactly(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    body = model_body(MODEL, tiny_model_dir, autoscaling={"min_replicas": 1})
    assert admin.post("/v1/admin/models", json=body).status_code == 201, body
    try:
        prompt = "The quick brown fox"
        whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=TOKENS, **GREEDY)
        stream = client.completions.create(
            model=MODEL,
            prompt=prompt,
            max_tokens=TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
        text, last, killed = _read_killing_host(stream)
        assert killed
        assert text == whole.choices[0].text
        assert last.usage.completion_tokens == TOKENS
        assert last.usage.prompt_tokens == whole.usage.prompt_tokens

        messages = [{"role": "user", "content": prompt}]
        reference = client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=TOKENS, **GREEDY
        )
        chat = client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=TOKENS, stream=True, **GREEDY
        )
        text, last, killed = _read_killing_host(chat)
        assert killed
        assert text == reference.choices[0].message.content
        assert last.object == "chat.completion.chunk"
    finally:
        assert admin.delete(f"/v1/admin/models/{MODEL}").status_code == 200
