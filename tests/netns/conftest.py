"""Two Ray hosts with addresses of their own on this machine: the head on the host side of
a veth pair, a worker node inside a network namespace (``ip netns``), which a test cuts
off the network and brings back. Real processes (``ray start``), real sockets between
them: what a cluster of two machines does when one drops off.

Its own pytest session (a process joins one Ray cluster): ``make test`` runs it last.
Skipped where the machine cannot make namespaces (not root, no iproute2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hosts_under_test import (
    APP,
    BASE_URL,
    GCS_PORT,
    HEAD_IP,
    HOST_IF,
    HTTP_PORT,
    NODE_IP,
    NS,
    NS_IF,
    RAY,
    Hosts,
    ray_env,
    run_ip,
    stop,
)
from support import app_folders


@pytest.fixture(scope="session")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    try:
        run_ip("netns", "add", NS)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    head: subprocess.Popen[bytes] | None = None
    hosts_: Hosts | None = None
    try:
        run_ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        run_ip("link", "set", NS_IF, "netns", NS)
        run_ip("addr", "add", f"{HEAD_IP}/24", "dev", HOST_IF)
        run_ip("link", "set", HOST_IF, "up")
        run_ip("addr", "add", f"{NODE_IP}/24", "dev", NS_IF, ns=NS)
        run_ip("link", "set", NS_IF, "up", ns=NS)
        run_ip("link", "set", "lo", "up", ns=NS)
        temp = tmp_path_factory.mktemp("ray")
        head = subprocess.Popen(
            [
                RAY, "start", "--head", f"--node-ip-address={HEAD_IP}", f"--port={GCS_PORT}",
                "--num-cpus=2", f"--object-store-memory={128 * 1024**2}", "--include-dashboard=false",
                "--labels=sllm-ray/disk=head", "--disable-usage-stats", f"--temp-dir={temp}", "--block",
            ],
            env=ray_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.environ["RAY_AUTH_MODE"] = "token"
        import ray

        deadline = time.monotonic() + 60
        while True:
            try:
                ray.init(address=f"{HEAD_IP}:{GCS_PORT}")
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(1)
        hosts_ = Hosts(temp, head)
        hosts_.start_node()
        yield hosts_
    finally:
        import ray
        from ray import serve

        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        if hosts_ is not None and hosts_.node is not None:
            stop(hosts_.node)
        if head is not None:
            stop(head)
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


@pytest.fixture(scope="session")
def admin(
    hosts: Hosts, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The app (the fake engine) on the two hosts, and raw HTTP to it."""
    from ray import serve

    from sllm_ray.builder import build_app
    from sllm_ray.testing.fake_engine import FAKE_ENGINE

    data = tmp_path_factory.mktemp("data")
    config = {
        "engine_cls": FAKE_ENGINE,
        **app_folders(data, tiny_model_dir),
        "request_wait_timeout_s": 60,
        "engine_hosts_per_node": 1,
        "replica_workers_per_node": 1,
    }
    serve.start(http_options={"host": HEAD_IP, "port": HTTP_PORT}, proxy_location="HeadOnly")
    serve.run(build_app(config), name=APP, route_prefix="/")
    with httpx.Client(base_url=BASE_URL, timeout=120) as http:
        yield http
