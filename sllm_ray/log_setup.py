"""Logging of sllm_ray's own messages in every process it runs in (Ray workers included).

Ray and Serve configure their own loggers only; without this, sllm_ray's INFO lines
(conversions, prefetches, engine builds, cold-start phases) would go nowhere. The level
comes from ``LOG_LEVEL`` (default INFO). Lines go to stderr, which Ray keeps in the
worker's log file and forwards to the driver.
"""

from __future__ import annotations

import logging
import os

_FORMAT = "%(asctime)s %(levelname)s %(name)s -- %(message)s"


def configure_logging() -> None:
    """Idempotent: a process configures the ``sllm_ray`` logger once."""
    logger = logging.getLogger("sllm_ray")
    if getattr(logger, "_sllm_ray_configured", False):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    logger.propagate = False
    logger._sllm_ray_configured = True  # type: ignore[attr-defined]
