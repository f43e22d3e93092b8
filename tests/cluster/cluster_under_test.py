"""The cluster suite's app: its address and the tiny model's engine arguments."""

from __future__ import annotations

import functools

import support
from support import APP_NAME

__all__ = ["APP_NAME", "BASE_URL", "ENGINE_KWARGS", "PORT", "model_body"]

PORT = 8001
BASE_URL = f"http://127.0.0.1:{PORT}"
ENGINE_KWARGS = {"max_model_len": 256, "enforce_eager": True, "kv_cache_memory_bytes": 32 * 1024**2}
# A model config for the tiny model with this suite's engine arguments.
model_body = functools.partial(support.model_body, engine_kwargs=ENGINE_KWARGS)
