"""Logging of sllm_ray's own messages in every process it runs in (Ray workers included).

Ray and Serve configure their own loggers only; without this, sllm_ray's INFO lines
(conversions, prefetches, engine builds, cold-start phases) would go nowhere. The level
comes from ``LOG_LEVEL`` (default INFO), the format from ``LOG_FORMAT``: ``text``
(default) or ``json``, one object per line with ``time``, ``level``, ``logger``,
``message`` and the record's fields (a request line's ``model``, ``status``, ``tokens``,
``ttft_s``, ``latency_s``, ``start``), for log pipelines. Lines go to stderr, which Ray
keeps in the worker's log file and forwards to the driver.
"""

from __future__ import annotations

import json
import logging
import os
import time

_FORMAT = "%(asctime)s %(levelname)s %(name)s -- %(message)s"
# Attributes every LogRecord has: what is left are the fields a call passed in ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{k: v for k, v in vars(record).items() if k not in _STANDARD},
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging() -> None:
    """Idempotent: a process configures the ``sllm_ray`` logger once."""
    logger = logging.getLogger("sllm_ray")
    if getattr(logger, "_sllm_ray_configured", False):
        return
    handler = logging.StreamHandler()
    json_lines = os.environ.get("LOG_FORMAT", "text").lower() == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    logger.propagate = False
    logger._sllm_ray_configured = True  # type: ignore[attr-defined]


class ProgressLog:
    """Progress of long work (a conversion, a copy) in the log: ``<what>: 45% (1.2 of 2.6
    GB)`` at most every ``every_s`` seconds, so a big model shows it is moving."""

    def __init__(self, logger: logging.Logger, what: str, total_bytes: int, every_s: float = 5.0) -> None:
        self._logger = logger
        self._what = what
        self._total = max(total_bytes, 1)
        self._every_s = every_s
        self._done = 0
        self._last = time.monotonic()

    def advance(self, nbytes: int) -> None:
        self._done += nbytes
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self._logger.info(
                "%s: %d%% (%.1f of %.1f GB)",
                self._what,
                100 * self._done // self._total,
                self._done / 1e9,
                self._total / 1e9,
            )
