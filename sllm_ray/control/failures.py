"""The model manager's book of failed replica starts, and their backoff. Pure logic.

A model's replicas are started in attempts: an attempt is one deployment of the model's
application with a given engine fingerprint. The first replica that reports a failed start
(``ModelManager.start_failed``) ends the attempt: the manager removes the application, so
Serve stops starting replicas that would fail the same way, and for a backoff
(``failed_start_backoff_s``, doubling with each failed attempt in a row, at most
``failed_start_backoff_max_s``) requests get the error at once. The first request after
the backoff starts the next attempt; a changed engine (a ``PATCH``) starts afresh. After
``failed_starts_before_failed`` failed attempts in a row the model's state is ``failed``
rather than ``failing``; it is retried all the same, only less often.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

FAILING = "failing"
FAILED = "failed"


def backoff_s(failures: int, base_s: float, max_s: float) -> float:
    """How long requests get the error at once after ``failures`` failed attempts in a row."""
    return min(base_s * 2 ** (failures - 1), max_s)


@dataclass(frozen=True)
class StartFailure:
    """What the ingress and the admin API are told of a model that failed to start."""

    model: str
    fingerprint: str  # the engine that failed (``ModelConfig.engine_fingerprint``)
    state: str  # FAILING or FAILED
    failures: int  # failed attempts in a row
    error: str  # the last replica's error
    failed_at: float  # wall-clock time of that error
    retry_at: float  # wall-clock time from which a request starts the next attempt
    retrying: bool  # an attempt is under way: requests wait for it
    seq: int  # grows with every error recorded: a change wakes the requests waiting

    def retry_after_s(self, now: float) -> int:
        """Seconds until a request would start the next attempt (at least 1: Retry-After)."""
        return max(1, math.ceil(self.retry_at - now))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class StartFailures:
    """Failed starts by model; every time is the caller's (wall clock, seconds)."""

    def __init__(self, base_s: float, max_s: float, failed_after: int) -> None:
        self._base_s = base_s
        self._max_s = max_s
        self._failed_after = failed_after
        self._failures: dict[str, StartFailure] = {}
        self._seq = 0

    def get(self, model: str) -> StartFailure | None:
        return self._failures.get(model)

    def all(self) -> dict[str, StartFailure]:
        return dict(self._failures)

    def record(self, model: str, fingerprint: str, error: str, now: float) -> tuple[StartFailure, bool]:
        """A replica of the model's current engine failed to start. Returns the model's
        failure and whether it ended an attempt (False: a replica Serve started before the
        manager removed the application failed too; its error is kept, not counted)."""
        self._seq += 1
        current = self._failures.get(model)
        if current is not None and current.fingerprint == fingerprint and not current.retrying:
            failure = replace(current, error=error, failed_at=now, seq=self._seq)
            self._failures[model] = failure
            return failure, False
        failures = current.failures + 1 if current is not None and current.fingerprint == fingerprint else 1
        failure = StartFailure(
            model=model,
            fingerprint=fingerprint,
            state=FAILED if failures >= self._failed_after else FAILING,
            failures=failures,
            error=error,
            failed_at=now,
            retry_at=now + backoff_s(failures, self._base_s, self._max_s),
            retrying=False,
            seq=self._seq,
        )
        self._failures[model] = failure
        return failure, True

    def due(self, model: str, now: float) -> bool:
        """Whether a request now should start the model's next attempt."""
        failure = self._failures.get(model)
        return failure is not None and not failure.retrying and now >= failure.retry_at

    def begin(self, model: str, fingerprint: str) -> None:
        """The model is deployed with this engine: the next attempt of a failed one, or a
        new engine, whose earlier failures no longer say anything."""
        failure = self._failures.get(model)
        if failure is None:
            return
        if failure.fingerprint != fingerprint:
            del self._failures[model]
        else:
            self._failures[model] = replace(failure, retrying=True)

    def started(self, model: str) -> None:
        """A replica of the model runs: its failures are over."""
        failure = self._failures.get(model)
        if failure is not None and failure.retrying:
            del self._failures[model]

    def clear(self, model: str) -> None:
        self._failures.pop(model, None)
