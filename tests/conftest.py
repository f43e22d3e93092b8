"""Shared fixtures: one real Ray instance per test session, the tiny model made locally."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# No test reaches the Hugging Face hub: a hub id is never answered, on any machine (a closed
# port fails at once), so the registration checks of hub ids read the same everywhere.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")
# Ray's metrics export, read by the metrics tests: every process reports each second.
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
METRICS_PORT = 18080


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sllm_ray.tools.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray instance owned by this test session; only it is shut down."""
    from sllm_ray import ray_compat

    # Here, not at import: importing Ray reads its settings (tests/netns sets its own first).
    ray_compat.set_serve_node_env()
    import ray
    from ray import serve

    ray.init(
        address="local",
        num_cpus=8,  # logical: several replicas share the 2 real cores
        object_store_memory=256 * 1024**2,
        include_dashboard=False,
        _metrics_export_port=METRICS_PORT,
        # No job runtime_env: every replica would inherit it, and Ray starts workers with
        # one (instead of taking prestarted ones) about 0.3 s slower: a cold-start cost.
    )
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def metrics_url(ray_session: None) -> str:
    """Ray's Prometheus export on this node: sllm_ray's metrics among Ray's."""
    return f"http://127.0.0.1:{METRICS_PORT}/metrics"


# The suites that need Ray, Serve and the real vLLM engine (pyproject's ``e2e`` marker):
# ``pytest -m "not e2e"`` runs the rest.
E2E_SUITES = {"e2e", "cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(tests) and item.path.relative_to(tests).parts[0] in E2E_SUITES:
            item.add_marker(pytest.mark.e2e)
