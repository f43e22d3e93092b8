"""The two test hosts: names, addresses and the processes that make them (``conftest.py``
starts them for the session)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support import wait_for

NS = f"sllm-t{os.getpid() % 100000}"
HOST_IF, NS_IF = f"{NS}a", f"{NS}b"  # interface names: at most 15 characters
HEAD_IP, NODE_IP = "10.231.7.1", "10.231.7.2"
GCS_PORT = 6391
HTTP_PORT = 8003
BASE_URL = f"http://{HEAD_IP}:{HTTP_PORT}"
APP = "sllm"
# The worker node's custom resource: a model that needs it runs there.
NS_RESOURCE = "netns_host"
# Ray declares a node it cannot reach dead after about 3 s, not 30 (its defaults).
FAST_HEALTH = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
RAY = str(Path(sys.executable).with_name("ray"))


def run_ip(*args: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


def ray_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "token", **FAST_HEALTH}


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a ``ray start --block`` this suite started, and what it started."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Hosts:
    temp: Path
    head: subprocess.Popen[bytes]
    node: subprocess.Popen[bytes] | None = None

    def start_node(self) -> None:
        """(Re)start the worker node in the namespace; wait until the head sees it."""
        self.node = subprocess.Popen(
            [
                "ip", "netns", "exec", NS, RAY, "start", f"--address={HEAD_IP}:{GCS_PORT}",
                f"--node-ip-address={NODE_IP}", "--num-cpus=1", f"--object-store-memory={96 * 1024**2}",
                f"--resources={{\"{NS_RESOURCE}\": 1}}", "--labels=sllm-ray/disk=ns",
                "--disable-usage-stats", "--block",
            ],
            env=ray_env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: NODE_IP in alive_ips(), 60, "the namespaced node to join")

    def cut(self) -> None:
        run_ip("link", "set", HOST_IF, "down")

    def reconnect(self) -> None:
        run_ip("link", "set", HOST_IF, "up")

    def restart_node(self) -> None:
        """A new node in the namespace, after Ray declared the old one dead."""
        if self.node is not None:
            stop(self.node)
        self.start_node()


def alive_ips() -> set[str]:
    import ray

    return {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
