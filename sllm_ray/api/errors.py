"""Errors in OpenAI's shape, raised as typed exceptions and rendered in one place.

Every error a client sees is ``{"error": {"message", "type", "param", "code"}}`` with the
matching HTTP status, so the official ``openai`` client raises its own typed errors
(``BadRequestError``, ``NotFoundError``, ...).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class OpenAIError(Exception):
    """An error to send back in OpenAI's format."""

    status: int = 500
    type: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.status,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    @classmethod
    def from_body(cls, status: int, body: dict[str, Any]) -> OpenAIError:
        """Rebuild the error an engine already rendered (vLLM's ``ErrorResponse``)."""
        error = body.get("error", {})
        return cls(
            str(error.get("message", "error")),
            param=error.get("param"),
            status=status,
            type=str(error.get("type", "error")),
        )


class BadRequestError(OpenAIError):
    status = 400
    type = "invalid_request_error"


class ModelNotFoundError(OpenAIError):
    status = 404
    type = "invalid_request_error"

    def __init__(self, model: str | None) -> None:
        if model is None:
            super().__init__("you must provide a model parameter", param="model")
        else:
            super().__init__(f"The model `{model}` does not exist.", param="model")


class ServiceUnavailableError(OpenAIError):
    status = 503
    type = "service_unavailable"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


def install_error_handlers(app: FastAPI) -> None:
    """Render every failure, ours or the framework's, in OpenAI's shape."""

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        return BadRequestError(
            str(first.get("msg", "invalid request")), param=".".join(loc) or None
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return OpenAIError(str(exc.detail), status=exc.status_code, type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return OpenAIError(f"internal error: {type(exc).__name__}: {exc}").response()
