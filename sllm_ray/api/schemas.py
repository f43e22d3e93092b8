"""The ingress's request and response models, and what ``/openapi.json`` says of them.

Request bodies are read and parsed by the ingress itself, within its bounds
(``request_body``): FastAPI would parse a declared body parameter before the route runs,
whole and without them. So each route names its body model in the schema
(``request_body``) and validates it where it parses it. The generation bodies allow every
field beyond the few sllm_ray reads: vLLM validates the rest, and the official client,
vLLM's benchmark client and ServerlessLLM's CLI send fields named nowhere here.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sllm_ray.errors import BadRequestError, validation_error


class _Open(BaseModel):
    """A shape sllm_ray reads a few fields of; the others pass through unchanged."""

    model_config = ConfigDict(extra="allow")


_B = TypeVar("_B", bound=_Open)


class ChatCompletionBody(_Open):
    """``POST /v1/chat/completions``: OpenAI's (and vLLM's) chat request."""

    model: str | None = Field(None, description="A registered model's name.")
    messages: list[dict[str, Any]] = Field(description="The conversation so far.")
    stream: bool | None = Field(False, description="Answer as server-sent events.")


class CompletionBody(_Open):
    """``POST /v1/completions``: OpenAI's (and vLLM's) legacy completion request."""

    model: str | None = Field(None, description="A registered model's name.")
    prompt: str | list[str] | list[int] | list[list[int]] | None = Field(
        None, description="One or more prompts: text or token ids."
    )
    stream: bool | None = Field(False, description="Answer as server-sent events.")


class EmbeddingBody(_Open):
    """``POST /v1/embeddings``: OpenAI's (and vLLM's) embedding request."""

    model: str | None = Field(None, description="A registered embedding model's name.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="One or more inputs: text or token ids."
    )
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description="float (default) or base64 (little-endian float32)."
    )
    dimensions: int | None = Field(None, ge=1, description="Truncate to this many (Matryoshka models).")


def generation_body(model: type[_B], body: dict[str, Any]) -> dict[str, Any]:
    """``body`` once it validates as ``model`` (400 naming the field otherwise), unchanged:
    vLLM gets the client's fields as sent."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc.errors(), BadRequestError) from None
    return body


class Completion(_Open):
    """A chat or legacy completion, as vLLM answers it."""

    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ModelCard(_Open):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    parent: str | None = Field(None, description="An adapter's base model.")


class ModelList(_Open):
    """OpenAI's list; ``models`` holds the same cards, where ServerlessLLM's CLI reads them."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
    models: list[ModelCard]


class Embeddings(_Open):
    """Embeddings, as vLLM answers them."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    model: str
    usage: dict[str, Any]


class Adapter(_Open):
    """A LoRA adapter of a model; ``parent`` is the base model."""

    adapter: str
    source: str
    parent: str


class AdapterList(_Open):
    object: Literal["list"] = "list"
    data: list[Adapter]


class AdapterDeleted(BaseModel):
    adapter: str
    parent: str
    deleted: bool


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(_Open):
    """``GET /ready``; when not ready (503) it also carries OpenAI's ``error``."""

    ready: bool
    waiting_for: list[str] = []


class AdminModel(_Open):
    """A registry record, with its live state where the route reports it."""

    model: str
    config: dict[str, Any]
    state: str
    created_at: float
    updated_at: float


class AdminModelList(_Open):
    object: Literal["list"] = "list"
    data: list[AdminModel]


class Deleted(BaseModel):
    model: str
    deleted: bool


class Warmed(BaseModel):
    """``POST /v1/admin/models/{model}/warm``: the hold now in place."""

    model: str
    replicas: int
    until: float
    reason: str


class Status(BaseModel):
    """ServerlessLLM's ``GET /status``: the models (with their queued requests) and nodes."""

    models: list[dict[str, Any]]
    nodes: list[dict[str, Any]]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: int


class ErrorBody(BaseModel):
    """Every error: OpenAI's shape (``sllm_ray.errors``)."""

    error: ErrorDetail


_ERRORS = {
    400: "Malformed or out-of-bounds request",
    401: "Missing or unknown API key",
    403: "The key's role does not allow this route",
    404: "Unknown model or route",
    405: "Method not allowed here (see the Allow header)",
    408: "The request body was not sent in time (request_body_timeout_s)",
    409: "A model of that name exists already, or is being deleted",
    413: "Request body beyond max_request_body_bytes",
    422: "Invalid model config",
    429: "Too many requests waiting for the model (see Retry-After)",
    500: "Internal error, with a request id its log line carries",
    503: "No replica ready in time, model failed to start, or not ready (see Retry-After)",
    504: "The request exceeded its deadline (request_deadline_s)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route, beside those every route may give (400, 401, 403,
    405, 500, 504), for ``responses=``."""
    shown = sorted({400, 401, 403, 405, 500, 504, *statuses})
    return {status: {"model": ErrorBody, "description": _ERRORS[status]} for status in shown}


# Body schemas (and the models they refer to) for the OpenAPI components, by name.
_BODY_SCHEMAS: dict[str, dict[str, Any]] = {}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as a route's JSON body."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    _BODY_SCHEMAS.update(schema.pop("$defs", {}))
    _BODY_SCHEMAS[model.__name__] = schema
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def event_stream(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A 200 that is ``model`` as JSON or, with ``"stream": true``, server-sent events of its
    chunks, for ``responses=``."""
    return {
        200: {
            "model": model,
            "description": "The completion; with stream: server-sent events ending in [DONE]",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }


def install_openapi(app: FastAPI) -> None:
    """``/openapi.json`` with the body schemas ``request_body`` declared among its components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(_BODY_SCHEMAS)
            # FastAPI declares a 422 in its own shape on routes with parameters; a malformed
            # parameter is answered 400 in OpenAI's (error_responses), declared instead.
            fastapi_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
            for operation in (op for ops in schema["paths"].values() for op in ops.values()):
                reply = operation["responses"].get("422", {})
                if reply.get("content", {}).get("application/json", {}).get("schema") == fastapi_422:
                    del operation["responses"]["422"]
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
