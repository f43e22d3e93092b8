"""The book of failed replica starts: attempts, backoff, the failed state; the errors that
carry them to clients."""

from __future__ import annotations

import pickle

import pytest

from sllm_ray.control.failures import FAILED, FAILING, StartFailures, backoff_s
from sllm_ray.errors import (
    ErrorReply,
    ModelNotFoundError,
    ModelStartFailedError,
    ServiceUnavailableError,
    UnprocessableError,
    unwrap,
)


def _book() -> StartFailures:
    return StartFailures(base_s=5, max_s=30, failed_after=3)


def test_backoff_doubles_up_to_its_bound() -> None:
    assert [backoff_s(n, 5, 30) for n in range(1, 6)] == [5, 10, 20, 30, 30]


def test_a_failed_attempt_backs_off_then_a_request_retries() -> None:
    book = _book()
    book.begin("m", "fp")  # first deploy: nothing to forget
    assert book.get("m") is None
    failure, ended = book.record("m", "fp", "ValueError: no memory", now=100)
    assert ended and failure.state == FAILING and failure.failures == 1
    assert failure.retry_at == 105 and not failure.retrying and failure.retry_after_s(101.5) == 4
    assert not book.due("m", 104.9) and book.due("m", 105)

    book.begin("m", "fp")  # the next attempt
    assert book.get("m").retrying and not book.due("m", 200)
    failure, ended = book.record("m", "fp", "ValueError: still", now=110)
    assert (
        ended and failure.failures == 2 and failure.retry_at == 120 and failure.error == "ValueError: still"
    )

    book.begin("m", "fp")
    failure, _ = book.record("m", "fp", "ValueError: again", now=130)
    assert failure.state == FAILED and failure.failures == 3 and failure.retry_at == 150


def test_a_second_replica_of_an_ended_attempt_is_not_counted() -> None:
    """Serve may start one more replica before the manager removes the application."""
    book = _book()
    first, _ = book.record("m", "fp", "first", now=100)
    again, ended = book.record("m", "fp", "second", now=101)
    assert not ended and again.failures == 1 and again.retry_at == first.retry_at
    assert again.error == "second" and again.seq > first.seq  # waiters still learn of it


def test_a_new_engine_or_a_running_replica_clears_the_failure() -> None:
    book = _book()
    book.record("m", "fp", "boom", now=100)
    book.begin("m", "other-fp")  # a PATCH changed the engine
    assert book.get("m") is None

    book.record("m", "fp", "boom", now=100)
    book.started("m")  # an ended attempt: a stale report of a running replica changes nothing
    assert book.get("m") is not None
    book.begin("m", "fp")
    book.started("m")
    assert book.get("m") is None and book.all() == {}


def test_failures_of_another_engine_start_counting_afresh() -> None:
    book = _book()
    book.record("m", "fp", "boom", now=100)
    book.begin("m", "fp")
    failure, ended = book.record("m", "fp2", "other", now=110)
    assert ended and failure.failures == 1 and failure.fingerprint == "fp2"


def test_failure_json_has_what_the_admin_api_shows() -> None:
    failure, _ = _book().record("m", "fp", "boom", now=100)
    assert set(failure.to_json()) == {
        "model",
        "fingerprint",
        "state",
        "failures",
        "error",
        "failed_at",
        "retry_at",
        "retrying",
        "seq",
    }


@pytest.mark.parametrize(
    "error",
    [
        ModelNotFoundError("x"),
        UnprocessableError("bad", param="engine_kwargs.max_model_len"),
        ServiceUnavailableError("later", 5),
        ModelStartFailedError("m", "ValueError: no memory", 7),
    ],
)
def test_errors_cross_processes_whole(error: Exception) -> None:
    again = pickle.loads(pickle.dumps(ErrorReply(error))).error
    assert type(again) is type(error) and again.body() == error.body() and again.headers == error.headers
    with pytest.raises(type(error)):
        unwrap(ErrorReply(error))
    assert unwrap({"ok": 1}) == {"ok": 1}


def test_the_start_failure_error_says_why() -> None:
    error = ModelStartFailedError("m", "ValueError: no memory", 7)
    assert error.status == 503 and error.headers == {"Retry-After": "7"}
    assert error.body()["error"] == {
        "message": "model `m` failed to start: ValueError: no memory",
        "type": "model_start_failed",
        "param": "model",
        "code": 503,
    }
