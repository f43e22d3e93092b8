"""A model whose replicas cannot start: its waiting requests learn why within seconds, it
backs off, shows as failed, and a PATCH brings it back.

The suite's app backs off 1 s after a failed start (``failed_start_backoff_s``), doubling.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
from app_under_test import APP_NAME, ENGINE_KWARGS, model_body
from support import wait_for

BODY = {"prompt": "hi", "max_tokens": 2}
# Passes registration, but vLLM finds no room for a single cache block in it.
TOO_SMALL = {**ENGINE_KWARGS, "kv_cache_memory_bytes": 1024}
CAUSE = "ValueError: No available memory for the cache blocks"


def _report_failure(model: str, fingerprint: str, message: str) -> None:
    """What a replica whose engine cannot be built tells the manager before it raises."""
    from ray import serve

    manager = serve.get_deployment_handle("model-manager", app_name=APP_NAME)
    manager.start_failed.remote(model, fingerprint, message, "a-replica").result()


def _described(admin: httpx.Client, model: str) -> dict:
    response = admin.get(f"/v1/admin/models/{model}")
    assert response.status_code == 200, response.text
    return response.json()


def _complete(admin: httpx.Client, model: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = admin.post("/v1/completions", json={"model": model, **BODY})
    return response, time.monotonic() - started


def _in_background(admin: httpx.Client, model: str) -> tuple[threading.Thread, list]:
    out: list[tuple[httpx.Response, float]] = []
    thread = threading.Thread(target=lambda: out.append(_complete(admin, model)))
    thread.start()
    return thread, out


def _is_start_failure(response: httpx.Response, model: str, cause: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "model_start_failed" and error["param"] == "model" and error["code"] == 503
    assert error["message"].startswith(f"model `{model}` failed to start: ") and cause in error["message"]
    assert int(response.headers["retry-after"]) >= 1


def test_a_reported_failure_fails_the_waiting_requests_and_backs_off(
    admin: httpx.Client, tiny_model_dir: Path
) -> None:
    """The manager and ingress side, with the replica's report made by hand: the model's
    replica can never be placed, so only the report ends its requests' wait."""
    model = "doomed"
    body = model_body(
        model, tiny_model_dir, resources={"custom": {"no_such_node": 1}}, request_wait_timeout_s=120
    )
    assert admin.post("/v1/admin/models", json=body).status_code == 201
    fingerprint = _described(admin, model)["engine_fingerprint"]
    try:
        waiter, out = _in_background(admin, model)
        time.sleep(2)  # queued in Serve for a replica that never comes
        _report_failure(model, "not-the-deployed-engine", "ValueError: ignored")
        _report_failure(model, fingerprint, "ValueError: the engine cannot be built")
        reported = time.monotonic()
        waiter.join(timeout=30)
        ((response, _),) = out
        assert time.monotonic() - reported < 5
        _is_start_failure(response, model, "ValueError: the engine cannot be built")

        described = _described(admin, model)
        failure = described["start_failure"]
        assert described["state"] == "failing" and failure["failures"] == 1 and not failure["retrying"]
        assert failure["error"] == "ValueError: the engine cannot be built"
        # Serve no longer starts replicas for it: its application is removed.
        wait_for(
            lambda: _described(admin, model)["deployment_status"] == "NOT_DEPLOYED", 30, "the app removed"
        )

        # Two more failed attempts, each started by the first request after the backoff.
        for attempt in (2, 3):
            time.sleep(max(0.0, _described(admin, model)["start_failure"]["retry_at"] - time.time()))
            waiter, out = _in_background(admin, model)
            wait_for(lambda: _described(admin, model)["start_failure"]["retrying"], 30, "a retry")
            _report_failure(model, fingerprint, f"ValueError: attempt {attempt}")
            waiter.join(timeout=30)
            _is_start_failure(out[0][0], model, f"attempt {attempt}")
        described = _described(admin, model)
        assert described["state"] == "failed" and described["start_failure"]["failures"] == 3
        assert described["start_failure"]["failed_at"] <= time.time()

        # Within the backoff (4 s now): the error at once.
        response, took = _complete(admin, model)
        _is_start_failure(response, model, "attempt 3")
        assert took < 1.0
        status = {m["model"]: m for m in admin.get("/status").json()["models"]}
        assert (
            status[model]["state"] == "failed"
            and status[model]["start_failure"]["error"] == "ValueError: attempt 3"
        )

        # A PATCH clears it and deploys again: requests wait for a replica as usual.
        patched = admin.patch(f"/v1/admin/models/{model}", json={"request_wait_timeout_s": 3})
        assert patched.status_code == 200, patched.text
        described = _described(admin, model)
        assert described["state"] == "active" and described["start_failure"] is None
        response, took = _complete(admin, model)
        assert (
            response.status_code == 503
            and "no replica ready after 3 s" in response.json()["error"]["message"]
        )
    finally:
        admin.delete(f"/v1/admin/models/{model}")


def test_an_engine_that_cannot_be_built_names_the_cause(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    model = "too-small"
    wait_for(lambda: admin.get("/ready").status_code == 200, 300, "the engine host pools")
    assert (
        admin.post(
            "/v1/admin/models", json=model_body(model, tiny_model_dir, engine_kwargs=TOO_SMALL)
        ).status_code
        == 201
    )
    try:
        response, took = _complete(admin, model)
        _is_start_failure(response, model, CAUSE)
        assert took < 10, took
        described = _described(admin, model)
        assert described["state"] in ("failing", "failed") and CAUSE in described["start_failure"]["error"]
        status = {m["model"]: m for m in admin.get("/status").json()["models"]}
        assert status[model]["start_failure"] is not None

        fixed = admin.patch(f"/v1/admin/models/{model}", json={"engine_kwargs": ENGINE_KWARGS})
        assert fixed.status_code == 200 and fixed.json()["replicas_rolled"] is True
        reply = client.completions.create(model=model, **BODY)
        assert reply.usage.completion_tokens == 2
        assert _described(admin, model)["start_failure"] is None
    finally:
        admin.delete(f"/v1/admin/models/{model}")
