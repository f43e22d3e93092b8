"""Request routing and error shaping, without Ray."""

from __future__ import annotations

import pytest

from sllm_ray.api.error_responses import error_response
from sllm_ray.api.model_directory import ModelDirectory
from sllm_ray.config import ModelConfig
from sllm_ray.errors import (
    BadRequestError,
    ModelNotFoundError,
    OpenAIError,
    ServiceUnavailableError,
    UnprocessableError,
    validation_error,
)
from sllm_ray.protocol import parse_sse_event

MODELS = [ModelConfig(model="a", model_source="src-a"), ModelConfig(model="org/b", model_source="src-b")]


@pytest.fixture
def directory() -> ModelDirectory[str]:
    directory: ModelDirectory[str] = ModelDirectory(lambda config: f"handle-{config.model}")
    directory.sync(MODELS)
    return directory


def test_resolve_picks_the_named_model(directory: ModelDirectory[str]) -> None:
    config, handle = directory.resolve({"model": "org/b", "messages": []})
    assert (config.model, handle) == ("org/b", "handle-org/b")


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


def test_handles_are_made_once_and_dropped_with_their_model() -> None:
    made: list[str] = []

    def make(config: ModelConfig) -> str:
        made.append(config.model)
        return f"handle-{config.model}#{len(made)}"

    directory: ModelDirectory[str] = ModelDirectory(make)
    directory.sync(MODELS)
    assert directory.get("a")[1] == directory.get("a")[1] == "handle-a#1"
    directory.remove("a")
    with pytest.raises(ModelNotFoundError):
        directory.get("a")
    directory.sync(MODELS)
    assert directory.get("a")[1] == "handle-a#2"
    directory.sync(MODELS[1:])
    assert "a" not in directory and "org/b" in directory


def test_model_cards(directory: ModelDirectory[str]) -> None:
    cards = directory.list_cards()
    assert cards["object"] == "list"
    assert [c["id"] for c in cards["data"]] == ["a", "org/b"]
    assert directory.card("a")["object"] == "model"


def test_error_bodies_have_openai_shape() -> None:
    err = ServiceUnavailableError("busy", 9)
    assert err.body() == {
        "error": {"message": "busy", "type": "service_unavailable", "param": None, "code": 503}
    }
    response = error_response(err)
    assert response.status_code == 503 and response.headers["retry-after"] == "9"

    rebuilt = OpenAIError.from_body(
        400, {"error": {"message": "m", "type": "BadRequestError", "param": "top_p"}}
    )
    assert (rebuilt.status, rebuilt.param, rebuilt.type) == (400, "top_p", "BadRequestError")


def test_validation_errors_become_one_openai_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        ModelConfig.model_validate({"model": "m", "model_source": "s", "max_queued_requests": -1, "x": 1})
    every = validation_error(caught.value.errors(), UnprocessableError, every=True)
    assert every.status == 422 and every.param == "max_queued_requests"
    assert every.message.startswith("max_queued_requests: ") and "; x: " in every.message
    first = validation_error(caught.value.errors())
    assert first.status == 400 and first.param == "max_queued_requests" and ";" not in first.message
    # FastAPI's locations start with where the value was: the body is no parameter.
    fastapi = validation_error([{"loc": ("body", "messages", 0), "msg": "Field required"}])
    assert (fastapi.param, fastapi.message) == ("messages.0", "messages.0: Field required")
    assert validation_error([]).message == "invalid request"


def test_sse_events_decode() -> None:
    assert parse_sse_event('data: {"a": 1}\n\n') == {"a": 1}
    assert parse_sse_event("data: [DONE]\n\n") is None
