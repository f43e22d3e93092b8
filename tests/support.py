"""Helpers shared by the test suites (importable from every test folder: pytest puts this
folder on the path for its conftest)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Poll until ``predicate`` returns something true and return it; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)
    return value


# The sllm_ray application's name in the end-to-end and cluster suites.
APP_NAME = "sllm"


def model_body(name: str, model_dir: Path, engine_kwargs: dict[str, Any], **settings: object) -> dict:
    """A model config for the tiny model: a suite's engine arguments plus ``settings``."""
    return {"model": name, "model_source": str(model_dir), "engine_kwargs": engine_kwargs, **settings}


def replica_states(model: str, app: str = APP_NAME) -> dict[str, int]:
    """The model deployment's replicas by state, as Serve reports them (none: ``{}``)."""
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


def store_status(node_id: str, app: str = APP_NAME) -> dict[str, Any]:
    """The report of the node's checkpoint store (``CheckpointStore.status``)."""
    import ray

    from sllm_ray.names import named_actor, store_name

    return ray.get(named_actor(store_name(app, node_id)).status.remote())


def pool_status(node_id: str, app: str = APP_NAME) -> dict[str, Any]:
    """The report of the node's engine host pool (``HostPool.status``)."""
    import ray

    from sllm_ray.names import named_actor, pool_name

    return ray.get(named_actor(pool_name(app, node_id)).status.remote())


def read_killing(stream: Iterable[Any], pid: int, after_chars: int = 10) -> tuple[str, Any, float]:
    """Read an ``openai`` stream (chat or completion), SIGKILLing process ``pid`` once more
    than ``after_chars`` of text came: the whole text, the last chunk, and when (wall
    clock) the process was killed."""
    text, last, killed_at = "", None, 0.0
    for chunk in stream:
        last = chunk
        if chunk.choices:
            choice = chunk.choices[0]
            text += (choice.delta.content if hasattr(choice, "delta") else choice.text) or ""
        if len(text) > after_chars and not killed_at:
            os.kill(pid, signal.SIGKILL)
            killed_at = time.time()
    assert killed_at, "the stream ended before the process was killed"
    return text, last, killed_at


def sllm_auto_scaling(keep_alive_s: int) -> dict[str, Any]:
    """ServerlessLLM's default ``auto_scaling_config`` (sllm/cli/default_config.json) with
    another keep-alive (theirs is 0)."""
    return {
        "metric": "concurrency",
        "target": 1,
        "min_instances": 0,
        "max_instances": 10,
        "keep_alive": keep_alive_s,
    }


def app_folders(folder: Path, model_dir: Path) -> dict[str, Any]:
    """An app config's folders for a test app: its registry and disk tier in ``folder``, its
    own DRAM tier there too (removed with the test's temporary folders, not left in
    /dev/shm), and the tiny model's folder as its model root."""
    return {
        "data_dir": str(folder),
        "store_dram_dir": str(folder / "dram"),
        "model_roots": [str(model_dir.parent)],
    }
