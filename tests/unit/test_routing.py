"""Request routing and error shaping, without Ray."""

from __future__ import annotations

import pytest

from sllm_ray.api.errors import BadRequestError, ModelNotFoundError, OpenAIError, ServiceUnavailableError
from sllm_ray.api.routing import ModelDirectory, parse_json_body
from sllm_ray.config import ModelConfig
from sllm_ray.protocol import ResponseHead, parse_sse_event

MODELS = [ModelConfig(model="a", model_source="src-a"), ModelConfig(model="org/b", model_source="src-b")]


@pytest.fixture
def directory() -> ModelDirectory[str]:
    return ModelDirectory(MODELS, {"a": "handle-a", "org/b": "handle-b"})


def test_resolve_picks_the_named_model(directory: ModelDirectory[str]) -> None:
    config, handle = directory.resolve({"model": "org/b", "messages": []})
    assert (config.model, handle) == ("org/b", "handle-b")


@pytest.mark.parametrize("body", [{}, {"model": None}, {"model": ""}])
def test_missing_model_is_404(directory: ModelDirectory[str], body: dict) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        directory.resolve(body)
    assert info.value.status == 404 and info.value.param == "model"


def test_unknown_model_is_404_naming_it(directory: ModelDirectory[str]) -> None:
    with pytest.raises(ModelNotFoundError, match="`nope`"):
        directory.resolve({"model": "nope"})


def test_non_string_model_is_400(directory: ModelDirectory[str]) -> None:
    with pytest.raises(BadRequestError):
        directory.resolve({"model": 3})


def test_every_model_needs_a_handle() -> None:
    with pytest.raises(ValueError, match="no deployment handle"):
        ModelDirectory(MODELS, {"a": "handle-a"})


def test_model_cards(directory: ModelDirectory[str]) -> None:
    cards = directory.list_cards()
    assert cards["object"] == "list"
    assert [c["id"] for c in cards["data"]] == ["a", "org/b"]
    assert directory.card("a")["object"] == "model"


@pytest.mark.parametrize("raw", [b"{oops", b"\xff\xfe", b"[]", b'"text"', b""])
def test_bodies_that_are_not_json_objects_are_400(raw: bytes) -> None:
    with pytest.raises(BadRequestError):
        parse_json_body(raw)


def test_error_bodies_have_openai_shape() -> None:
    err = ServiceUnavailableError("busy", retry_after_s=9)
    assert err.body() == {
        "error": {"message": "busy", "type": "service_unavailable", "param": None, "code": 503}
    }
    response = err.response()
    assert response.status_code == 503 and response.headers["retry-after"] == "9"

    rebuilt = OpenAIError.from_body(
        400, {"error": {"message": "m", "type": "BadRequestError", "param": "top_p"}}
    )
    assert (rebuilt.status, rebuilt.param, rebuilt.type) == (400, "top_p", "BadRequestError")


def test_sse_events_decode() -> None:
    assert parse_sse_event('data: {"a": 1}\n\n') == {"a": 1}
    assert parse_sse_event("data: [DONE]\n\n") is None
    assert ResponseHead(200).is_stream and not ResponseHead(200, {}).is_stream
