"""A three-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), one per session.

Runs as its own pytest session (``make test`` runs it after the single-node suite): a
process joins one Ray cluster only. Each node has its own disk folder (the
``sllm-ray/disk`` label) and DRAM tier, as separate machines would; nodes ``a`` and ``b``
carry a custom resource naming them, for pinning a model to one node.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster_under_test import APP_NAME, BASE_URL, PORT
from support import app_folders

NODE_ARGS = {"num_cpus": 2, "object_store_memory": 128 * 1024**2}


@pytest.fixture(scope="session")
def cluster() -> Iterator[Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=True,
        head_node_args={**NODE_ARGS, "labels": {"sllm-ray/disk": "head"}, "include_dashboard": False},
    )
    for name in ("a", "b"):
        cluster.add_node(**NODE_ARGS, labels={"sllm-ray/disk": name}, resources={f"node_{name}": 1})
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def admin(cluster: Any, tiny_model_dir: Path, data_dir: Path) -> Iterator[httpx.Client]:
    """The app on the cluster (no model yet), and raw HTTP to it."""
    from ray import serve

    from sllm_ray.builder import build_app

    config = {
        **app_folders(data_dir, tiny_model_dir),
        "request_wait_timeout_s": 180,
        "engine_hosts_per_node": 1,
        "engine_sleepers_per_node": 1,
        "store_prefetch_nodes": 1,
        "replica_workers_per_node": 1,  # three nodes share two cores: each idle worker costs seconds to start
    }
    serve.start(http_options={"host": "127.0.0.1", "port": PORT}, proxy_location="HeadOnly")
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    with httpx.Client(base_url=BASE_URL, timeout=300) as http:
        yield http
