"""The application under test: real Serve, real vLLM (CPU build), three models.

- ``tiny``: the functional model; a long keep-alive so it stays warm across tests.
- ``tiny-ephemeral``: same weights, keep-alive of 2 s, for the scale-to-zero test.
- ``unplaceable``: needs a Ray resource no node has, so its replica never starts; with a
  2 s wait bound it shows the 503 path.
"""

from __future__ import annotations

from pathlib import Path

APP_NAME = "sllm"
BASE_URL = "http://127.0.0.1:8000"
ENGINE_KWARGS = {"max_model_len": 512, "enforce_eager": True, "kv_cache_memory_bytes": 64 * 1024**2}


def model_body(name: str, model_dir: Path, **settings: object) -> dict:
    """A model config for the tiny model: the suite's engine arguments plus ``settings``."""
    return {"model": name, "model_source": str(model_dir), "engine_kwargs": ENGINE_KWARGS, **settings}


def app_config(model_dir: Path, data_dir: Path) -> dict:
    return {
        "data_dir": str(data_dir),
        # The suite's own DRAM tier, removed with its temporary folders (not /dev/shm).
        "store_dram_dir": str(data_dir / "dram"),
        "model_roots": [str(model_dir.parent)],
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


def replica_states(model: str, app: str = APP_NAME) -> dict[str, int]:
    """The model deployment's replicas by state, as Serve reports them."""
    from ray import serve

    from sllm_ray.names import model_app_name

    status = serve.status().applications[model_app_name(app, model)].deployments[f"model:{model}"]
    return {str(k): v for k, v in status.replica_states.items() if v}


def replica_record(model: str, app: str = APP_NAME) -> dict:
    """A replica's record of the model (``ModelServer.record``), its engine host's inside."""
    from ray import serve

    from sllm_ray.names import model_app_name

    handle = serve.get_deployment_handle(f"model:{model}", app_name=model_app_name(app, model))
    return handle.record.remote().result()
