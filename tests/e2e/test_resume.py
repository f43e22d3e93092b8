"""Streams that survive their engine, with vLLM: the engine host SIGKILLed mid-stream, the
replica takes a new host, and the ingress continues the stream from the token ids already
sent. A greedy answer comes out exactly as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
from app_under_test import model_body
from support import read_killing, replica_record

MODEL = "tiny-resume"
# A random-weight model rarely emits end-of-sequence; ignore_eos makes lengths exact.
GREEDY = {"temperature": 0, "extra_body": {"ignore_eos": True}}
TOKENS = 48


def _read_killing_host(stream: Any) -> tuple[str, Any]:
    """The text and last chunk of ``stream``, its engine host killed after a few tokens."""
    text, last, _ = read_killing(stream, replica_record(MODEL)["host"]["pid"], after_chars=3)
    return text, last


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
        text, last = _read_killing_host(stream)
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
        text, last = _read_killing_host(chat)
        assert text == reference.choices[0].message.content
        assert last.object == "chat.completion.chunk"
    finally:
        assert admin.delete(f"/v1/admin/models/{MODEL}").status_code == 200
