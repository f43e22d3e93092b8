"""Render every failure, ours or the framework's, as an OpenAI-shaped response, in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sllm_ray.errors import (
    MethodNotAllowedError,
    OpenAIError,
    carried_error,
    internal_error,
    validation_error,
)

logger = logging.getLogger(__name__)


def error_response(exc: OpenAIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def as_openai_error(exc: BaseException, what: str) -> OpenAIError:
    """Any failure as the error a client may see: the ``OpenAIError`` it is or carries across
    Ray calls, else an internal error whose details go only to the log (``what`` says what
    failed)."""
    error = carried_error(exc)
    if error is None:
        return internal_error(logger, f"{what}: {type(exc).__name__}: {exc}", exc)
    if error.status >= 500:
        logger.warning("%s: %d %s", what, error.status, error.message)
    else:  # the client's mistake: no traceback, not an error of ours
        logger.info("%s: %d %s", what, error.status, error.message)
    return error


def _literal_segments(route: object) -> int:
    path = str(getattr(route, "path", ""))
    return sum(1 for segment in path.split("/") if segment and not segment.startswith("{"))


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path takes, by its most specific route templates.
    Starlette's own 405 names only the first route matching the path, though several may
    (GET, PATCH and DELETE of one admin model); and a model's sub-resource
    (``/v1/admin/models/m/adapters``) matches the model's own ``{name:path}`` too."""
    matched = [r for r in request.app.routes if r.matches(request.scope)[0] is not Match.NONE]
    most = max((_literal_segments(r) for r in matched), default=0)
    methods: set[str] = set()
    for route in matched:
        if _literal_segments(route) == most:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
        return error_response(as_openai_error(exc, f"{request.method} {request.url.path}"))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return error_response(MethodNotAllowedError(request.method, allowed_methods(request)))
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(
            OpenAIError(str(exc.detail), status=exc.status_code, type=kind, headers=exc.headers)
        )

    # Ray's wrapper of a remote method's error, handled here rather than as an unexpected
    # exception: Starlette re-raises those after answering (a traceback at ERROR), and the
    # error it carries may be the client's mistake.
    @app.exception_handler(RayTaskError)
    async def _remote(request: Request, exc: RayTaskError) -> JSONResponse:
        return error_response(as_openai_error(exc, f"{request.method} {request.url.path}"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(as_openai_error(exc, f"{request.method} {request.url.path}"))
