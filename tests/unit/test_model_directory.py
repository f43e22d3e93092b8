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
    route = directory.route({"model": "org/b", "messages": []})
    assert (route.config.model, route.adapter) == ("org/b", None)


def test_routing_makes_no_handle() -> None:
    """A request for a model whose application is being deployed again is routed before
    Serve lists the deployment: its handle is made later, by the wait for a replica."""

    def not_deployed(config: ModelConfig) -> str:
        raise KeyError(f"{config.model} does not exist")

    directory: ModelDirectory[str] = ModelDirectory(not_deployed)
    directory.sync(MODELS)
    assert directory.route({"model": "a"}).config.model == "a"
    with pytest.raises(KeyError):
        directory.get("a")


@pytest.mark.parametrize("body", [{}, {"model": None}, {"model": ""}])
def test_missing_model_is_404(directory: ModelDirectory[str], body: dict) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        directory.route(body)
    assert info.value.status == 404 and info.value.param == "model"


def test_unknown_model_is_404_naming_it(directory: ModelDirectory[str]) -> None:
    with pytest.raises(ModelNotFoundError, match="`nope`"):
        directory.route({"model": "nope"})


def test_non_string_model_is_400(directory: ModelDirectory[str]) -> None:
    with pytest.raises(BadRequestError):
        directory.route({"model": 3})


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


def _with_adapters() -> ModelDirectory[str]:
    base = ModelConfig(
        model="base",
        model_source="src",
        engine_kwargs={"enable_lora": True},
        adapters=[{"adapter": "fine", "source": "/lora/fine"}],
    )
    directory: ModelDirectory[str] = ModelDirectory(lambda config: f"handle-{config.model}")
    directory.sync([*MODELS, base])
    return directory


def test_an_adapter_routes_to_its_base() -> None:
    route = _with_adapters().route({"model": "fine", "prompt": "x"})
    assert (route.config.model, route.served) == ("base", "fine")
    assert route.adapter is not None and route.adapter.source == "/lora/fine"
    assert route.body == {"model": "fine", "prompt": "x"}  # the engine serves it by this name


def test_serverless_llms_lora_adapter_name_beside_the_base() -> None:
    directory = _with_adapters()
    route = directory.route({"model": "base", "lora_adapter_name": "fine", "prompt": "x"})
    assert route.served == "fine" and route.body == {"model": "fine", "prompt": "x"}
    with pytest.raises(ModelNotFoundError, match="`nope`"):
        directory.route({"model": "base", "lora_adapter_name": "nope"})
    with pytest.raises(ModelNotFoundError):  # not an adapter of that model
        directory.route({"model": "a", "lora_adapter_name": "fine"})


def test_a_backend_suffix_names_the_model() -> None:
    directory = _with_adapters()
    route = directory.route({"model": "org/b:vllm"})
    assert route.config.model == "org/b" and route.body == {"model": "org/b"}
    assert directory.route({"model": "fine:vllm"}).served == "fine"
    assert "org/b:vllm" in directory
    with pytest.raises(ModelNotFoundError):
        directory.route({"model": "org/b:sglang"})


def test_adapter_cards_name_their_parent_and_the_list_is_under_models_too() -> None:
    directory = _with_adapters()
    cards = directory.list_cards()
    assert [c["id"] for c in cards["data"]] == ["a", "base", "fine", "org/b"]
    assert cards["models"] == cards["data"]  # where ServerlessLLM's `sllm status` reads it
    assert directory.card("fine")["parent"] == "base"
    directory.remove("base")  # its adapters go with it
    assert "fine" not in directory


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
