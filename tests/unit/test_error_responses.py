"""Failures as responses: client errors keep their status across Ray calls, and a server
fault tells the client only a request id that the log line carries too."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ray.exceptions import RayTaskError

from sllm_ray.api.error_responses import install_error_handlers
from sllm_ray.errors import ModelNotFoundError, carried_error

SECRET = "actor 9f2c pid 4242 on 10.1.2.3, /opt/venv/lib/python3.11/site-packages/ray/_raylet.pyx"


def _from_ray(cause: Exception) -> Exception:
    """The exception a Ray caller sees when a remote method raised ``cause``."""
    return RayTaskError("ModelManager.describe", f"Traceback ... {SECRET}", cause).as_instanceof_cause()


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/remote-404")
    async def remote_404() -> None:
        raise _from_ray(ModelNotFoundError("nope"))

    @app.get("/remote-404-plain")
    async def remote_404_plain() -> None:  # a RayTaskError that is not also the cause's class
        raise RayTaskError("ModelManager.describe", f"Traceback ... {SECRET}", ModelNotFoundError("nope"))

    @app.get("/fault")
    async def fault() -> None:
        raise RuntimeError(SECRET)

    @app.get("/remote-fault")
    async def remote_fault() -> None:
        raise _from_ray(KeyError(SECRET))

    return TestClient(app, raise_server_exceptions=False)


def test_an_error_carried_across_ray_is_found_innermost() -> None:
    cause = ModelNotFoundError("nope")
    wrapped = _from_ray(cause)
    assert carried_error(wrapped) is cause
    try:
        raise RuntimeError("again") from wrapped
    except RuntimeError as exc:
        assert carried_error(exc) is cause
    assert carried_error(_from_ray(ValueError("x"))) is None


@pytest.mark.parametrize("route", ["/remote-404", "/remote-404-plain"])
def test_a_client_error_from_a_ray_call_keeps_its_status(
    client: TestClient, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    strict = TestClient(client.app)  # answered, not re-raised as an unexpected exception
    with caplog.at_level(logging.INFO):
        reply = strict.get(route)
    assert reply.status_code == 404
    assert reply.json() == {
        "error": {
            "message": "The model `nope` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": 404,
        }
    }
    assert SECRET not in reply.text
    # Logged as the client's mistake: no traceback, below WARNING.
    (record,) = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert record.levelno == logging.INFO and record.exc_info is None


@pytest.mark.parametrize("route", ["/fault", "/remote-fault"])
def test_a_server_fault_says_internal_error_and_a_request_id_the_log_carries(
    client: TestClient, caplog: pytest.LogCaptureFixture, route: str
) -> None:
    with caplog.at_level(logging.INFO):
        reply = client.get(route)
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == 500
    match = re.fullmatch(r"internal error \(request id ([0-9a-f]{16})\)", error["message"])
    assert match is not None, error["message"]
    assert "pid" not in reply.text and "10.1.2.3" not in reply.text and "/opt" not in reply.text
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    # The details, the traceback included, in the log only.
    assert logged and logged[0].levelno == logging.ERROR and logged[0].exc_info is not None
