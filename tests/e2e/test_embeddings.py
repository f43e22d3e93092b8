"""Embeddings from a model on vLLM's pooling runner: the tiny Llama with ``convert: embed``,
started from zero replicas by the first request, through the official client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from app_under_test import APP_NAME, ENGINE_KWARGS, model_body

EMBED = "tiny-embed"


@pytest.fixture(scope="module")
def embedder(admin: httpx.Client, tiny_model_dir: Path) -> Iterator[str]:
    body = model_body(
        EMBED,
        tiny_model_dir,
        engine_kwargs={**ENGINE_KWARGS, "runner": "pooling", "convert": "embed"},
        autoscaling={"keep_alive_s": 300},
    )
    registered = admin.post("/v1/admin/models", json=body)
    assert registered.status_code == 201, registered.text
    yield EMBED
    admin.delete(f"/v1/admin/models/{EMBED}")


def test_two_inputs_give_two_vectors_of_the_models_width(
    client: openai.OpenAI, embedder: str, tiny_model_dir: Path, replicas
) -> None:
    assert replicas(embedder) == {}
    width = 128  # the tiny model's hidden_size
    reply = client.embeddings.create(model=embedder, input=["hello there", "the sky is blue"])
    first, second = (d.embedding for d in reply.data)
    assert len(first) == len(second) == width and first != second
    assert reply.usage.prompt_tokens > 0
    # float, as the client asks for it when told to, and base64 (the client's default) agree.
    floats = client.embeddings.create(model=embedder, input="hello there", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(first, abs=1e-5)
    # The same through the app's deployment handle, for Python callers in the cluster.
    from ray import serve

    handle = serve.get_app_handle(APP_NAME)
    body = {"model": embedder, "input": "hello there", "encoding_format": "float"}
    handled = handle.embeddings.remote(body).result()
    assert handled["data"][0]["embedding"] == pytest.approx(first, abs=1e-5)


def test_wrong_kinds_of_request_are_clear_400s(admin: httpx.Client, embedder: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    chat = admin.post("/v1/chat/completions", json={"model": embedder, "messages": messages})
    assert chat.status_code == 400 and "embedding model" in chat.json()["error"]["message"], chat.text
    embed = admin.post("/v1/embeddings", json={"model": "tiny", "input": "hi"})
    assert embed.status_code == 400 and "generative model" in embed.json()["error"]["message"], embed.text
    # Not a Matryoshka model: vLLM's own refusal of `dimensions`, and a format not JSON.
    dims = admin.post("/v1/embeddings", json={"model": embedder, "input": "hi", "dimensions": 4})
    assert dims.status_code == 400 and "dimensions" in dims.json()["error"]["message"], dims.text
    raw = admin.post("/v1/embeddings", json={"model": embedder, "input": "hi", "encoding_format": "bytes"})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "encoding_format", raw.text
