"""Errors in OpenAI's shape, raised as typed exceptions anywhere in sllm_ray.

Every error a client sees is ``{"error": {"message", "type", "param", "code"}}`` with the
matching HTTP status, so the official ``openai`` client raises its own typed errors
(``BadRequestError``, ``NotFoundError``, ...). ``sllm_ray.api.error_responses`` renders them; this
module has no web-framework dependency, so the control plane raises them too (Ray
re-raises them in the caller as instances of the same class).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


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

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields, whatever a subclass's constructor takes: these errors
        # cross process boundaries (manager -> ingress -> Python callers).
        return _rebuild, (type(self), self.message, dict(self.__dict__))

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


def _rebuild(cls: type[OpenAIError], message: str, state: dict[str, Any]) -> OpenAIError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class BadRequestError(OpenAIError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(OpenAIError):
    status = 401
    type = "authentication_error"


class PermissionDeniedError(OpenAIError):
    status = 403
    type = "permission_error"


class ModelNotFoundError(OpenAIError):
    status = 404
    type = "invalid_request_error"

    def __init__(self, model: str | None) -> None:
        if model is None:
            super().__init__("you must provide a model parameter", param="model")
        else:
            super().__init__(f"The model `{model}` does not exist.", param="model")


class SourceNotFoundError(OpenAIError):
    """A registration whose ``model_source`` (or an adapter's ``source``) names a model or a
    folder that cannot be found."""

    status = 404
    type = "invalid_request_error"

    def __init__(self, message: str, param: str = "model_source") -> None:
        super().__init__(message, param=param)


class MethodNotAllowedError(OpenAIError):
    """A method the path does not take; ``allow`` lists those it does (the ``Allow`` header)."""

    status = 405
    type = "invalid_request_error"

    def __init__(self, method: str, allow: Sequence[str]) -> None:
        super().__init__(f"method {method} is not allowed here", headers={"Allow": ", ".join(allow)})


class RequestTimeoutError(OpenAIError):
    """The client did not send its whole body in time (a slow or stalled upload)."""

    status = 408
    type = "timeout_error"


class ConflictError(OpenAIError):
    status = 409
    type = "conflict_error"


class PayloadTooLargeError(OpenAIError):
    status = 413
    type = "invalid_request_error"


class UnprocessableError(OpenAIError):
    """A well-formed request whose content is invalid (field-level validation)."""

    status = 422
    type = "invalid_request_error"


class _RetryLater(OpenAIError):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class TooManyRequestsError(_RetryLater):
    status = 429
    type = "rate_limit_error"


class ServiceUnavailableError(_RetryLater):
    status = 503
    type = "service_unavailable"


class EngineLostError(ServiceUnavailableError):
    """A replica's engine host died under a request (or the replica can get no new one):
    a request with nothing sent yet is retried, a stream resumed (``api/resume.py``)."""


class ReplicaLeavingError(ServiceUnavailableError):
    """A replica whose first engine could not be had, asked by a request that came after
    its failure: the ingress sends the request again, to a newer replica (a PATCH's) or,
    once it has heard of the failure, answers with its cause."""


class ModelStartFailedError(_RetryLater):
    """The model's replicas cannot start (e.g. its engine cannot be built): the cause, sent
    at once to the requests waiting for it and, until the retry backoff ends, to new ones."""

    status = 503
    type = "model_start_failed"

    def __init__(self, model: str, cause: str, retry_after_s: int) -> None:
        super().__init__(f"model `{model}` failed to start: {cause}", retry_after_s)
        self.param = "model"


class DeadlineExceededError(OpenAIError):
    """A request that took longer than its deadline: failed, so that a stalled one does not
    hold its connection and its share of the ingress for ever."""

    status = 504
    type = "timeout_error"

    def __init__(self, deadline_s: float, setting: str) -> None:
        super().__init__(f"request exceeded its deadline of {deadline_s:g} s ({setting})")


class InternalError(OpenAIError):
    """A fault of the server's own. The client learns only that it happened and a request id
    to quote; the details (which may name processes, addresses and files) stay in the log
    line that carries the same id (``internal_error``)."""

    status = 500
    type = "internal_error"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"internal error (request id {request_id})")
        self.request_id = request_id


def internal_error(log: logging.Logger, what: str, exc: BaseException | None = None) -> InternalError:
    """Log ``what`` (and ``exc``'s traceback) under a new request id; the error for the client."""
    request_id = uuid.uuid4().hex[:16]
    log.error("%s [request id %s]", what, request_id, exc_info=exc)
    return InternalError(request_id)


def carried_error(exc: BaseException) -> OpenAIError | None:
    """The ``OpenAIError`` an exception is or wraps, innermost first: Ray re-raises an error
    from another process as a ``RayTaskError`` holding it as ``cause`` (and Serve's handles
    may wrap that again), so a 404 raised by the manager would otherwise reach the client
    as a 500 carrying Ray's traceback."""
    found: OpenAIError | None = None
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OpenAIError):
            found = current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return found


def validation_error(
    errors: Sequence[Mapping[str, Any]],
    error_cls: type[OpenAIError] = BadRequestError,
    *,
    every: bool = False,
) -> OpenAIError:
    """Pydantic's validation errors (``ValidationError.errors()``, FastAPI's too, whose
    locations start with ``body``) as one OpenAI error: ``param`` is the first offending
    field, and the message names it (``every``: names every offending field)."""

    def where(error: Mapping[str, Any]) -> str:
        loc = [str(part) for part in error.get("loc", ())]
        return ".".join(loc[1:] if loc[:1] == ["body"] else loc)

    def line(error: Mapping[str, Any]) -> str:
        msg = str(error.get("msg", "invalid value"))
        return f"{where(error)}: {msg}" if where(error) else msg

    if not errors:
        return error_cls("invalid request")
    shown = errors if every else errors[:1]
    return error_cls("; ".join(line(e) for e in shown), param=where(errors[0]) or None)


@dataclass(frozen=True)
class ErrorReply:
    """An ``OpenAIError`` returned instead of raised by a Serve deployment's method, for the
    caller to raise (``unwrap``): Serve logs every exception a replica's method raises, with
    its traceback, at ERROR, and a client's mistake (404, 409, 422) is no server error."""

    error: OpenAIError


def unwrap(value: T | ErrorReply) -> T:
    """The value, or the error an ``ErrorReply`` carries, raised."""
    if isinstance(value, ErrorReply):
        raise value.error
    return value
