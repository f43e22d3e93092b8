"""The application under test: real Serve, real vLLM (CPU build), three models.

- ``tiny``: the functional model; a long keep-alive so it stays warm across tests.
- ``tiny-ephemeral``: same weights, keep-alive of 2 s, for the scale-to-zero test.
- ``unplaceable``: needs a Ray resource no node has, so its replica never starts; with a
  2 s wait bound it shows the 503 path.
"""

from __future__ import annotations

import functools
from pathlib import Path

import support
from support import APP_NAME, app_folders

__all__ = ["APP_NAME", "BASE_URL", "ENGINE_KWARGS", "deploy", "model_body"]

BASE_URL = "http://127.0.0.1:8000"
ENGINE_KWARGS = {"max_model_len": 512, "enforce_eager": True, "kv_cache_memory_bytes": 64 * 1024**2}
# A model config for the tiny model with this suite's engine arguments (``engine_kwargs=``
# replaces them).
model_body = functools.partial(support.model_body, engine_kwargs=ENGINE_KWARGS)


def app_config(model_dir: Path, data_dir: Path) -> dict:
    return {
        **app_folders(data_dir, model_dir),
        "request_wait_timeout_s": 180,
        "retry_after_s": 7,
        "failed_start_backoff_s": 1,  # test_failures retries a failing model within seconds
        "models": [
            model_body("tiny", model_dir, autoscaling={"keep_alive_s": 600}),
            model_body(
                "tiny-ephemeral", model_dir, autoscaling={"keep_alive_s": 2, "look_back_period_s": 11}
            ),
            model_body(
                "unplaceable",
                model_dir,
                resources={"custom": {"node_that_does_not_exist": 1}},
                request_wait_timeout_s=2,
            ),
        ],
    }


def deploy(model_dir: Path, data_dir: Path, **overrides: object) -> None:
    from ray import serve

    from sllm_ray.builder import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(build_app({**app_config(model_dir, data_dir), **overrides}), name=APP_NAME, route_prefix="/")
