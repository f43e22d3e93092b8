"""The container entry point (deploy/docker/entrypoint.sh), run for real by bash with stub
`ray`, `sllm-ray` and `df` commands first on PATH: what it starts in each mode, its wait for
the head, its /dev/shm check and its health command (against a real HTTP server)."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "deploy" / "docker" / "entrypoint.sh"
GiB = 1024**3
BIG_SHM = 4 * GiB

STUBS = {
    # Logs each call; `health-check` fails until the head is "up" (HEAD_UP_AFTER calls).
    "ray": """#!/usr/bin/env bash
echo "ray $*" >> "$STUB_LOG"
if [[ "$1" == health-check ]]; then
    n=$(( $(cat "$STUB_DIR/checks" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$STUB_DIR/checks"
    (( n >= ${HEAD_UP_AFTER:-1} ))
fi
""",
    "sllm-ray": """#!/usr/bin/env bash
echo "sllm-ray $* RAY_ADDRESS=$RAY_ADDRESS" >> "$STUB_LOG"
""",
    "df": """#!/usr/bin/env bash
echo "1B-blocks"; echo " $FAKE_SHM_BYTES"
""",
}


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, text in STUBS.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def run(stubs: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = stubs.parent / "calls.log"
    log.unlink(missing_ok=True)
    base = {
        "PATH": f"{stubs}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "STUB_LOG": str(log),
        "STUB_DIR": str(stubs.parent),
        "FAKE_SHM_BYTES": str(BIG_SHM),
        "RAY_HEAD_WAIT_S": "0",
    }
    done = subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, text=True, timeout=60
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_head_starts_ray_then_the_draining_serve(stubs: Path) -> None:
    done, calls = run(stubs)
    assert done.returncode == 0, done.stderr
    assert calls[0].startswith("ray start --head --port=6379 --dashboard-host=0.0.0.0")
    assert "--metrics-export-port=8080" in calls[0] and "--object-store-memory=536870912" in calls[0]
    assert calls[1] == "sllm-ray serve configs/serve.yaml RAY_ADDRESS=127.0.0.1:6379"
    assert run(stubs, "head", SERVE_CONFIG="other.yaml")[1][1].startswith("sllm-ray serve other.yaml")


def test_a_worker_waits_for_the_head_then_joins_it(stubs: Path) -> None:
    done, calls = run(stubs, MODE="worker", RAY_HEAD="head:6379", HEAD_UP_AFTER="3")
    assert done.returncode == 0, done.stderr
    assert calls[:3] == ["ray health-check --address head:6379"] * 3
    assert calls[3].startswith("ray start --address=head:6379 --block --metrics-export-port=8080")
    assert done.stderr.count("waiting for the Ray head at head:6379") == 2


def test_a_worker_gives_up_on_a_head_that_never_answers(stubs: Path) -> None:
    done, calls = run(stubs, MODE="worker", RAY_HEAD="head:6379", HEAD_UP_AFTER="99", RAY_HEAD_WAIT_TRIES="4")
    assert done.returncode == 1
    assert "the Ray head at head:6379 did not answer after 4 tries" in done.stderr
    assert not any(c.startswith("ray start") for c in calls)


def test_a_worker_needs_the_heads_address(stubs: Path) -> None:
    done, calls = run(stubs, MODE="worker")
    assert done.returncode == 1 and "MODE=worker needs RAY_HEAD" in done.stderr
    assert calls == []


@pytest.mark.parametrize("mode", ["head", "worker"])
def test_too_small_a_dev_shm_is_refused_saying_what_it_needs(stubs: Path, mode: str) -> None:
    done, calls = run(stubs, MODE=mode, RAY_HEAD="head:6379", FAKE_SHM_BYTES=str(64 * 1024**2))
    assert done.returncode == 1
    assert calls == []  # nothing started
    assert "/dev/shm is 0.06 GiB" in done.stderr
    assert "2.50 GiB at least" in done.stderr and "--shm-size" in done.stderr


def test_the_shm_need_follows_the_dram_tier_and_object_store_sizes(stubs: Path) -> None:
    small = {"SLLM_RAY_STORE_DRAM_BYTES": str(GiB), "RAY_OBJECT_STORE_BYTES": str(GiB // 2)}
    assert run(stubs, FAKE_SHM_BYTES=str(GiB + GiB // 2), **small)[0].returncode == 0
    done, _ = run(stubs, FAKE_SHM_BYTES=str(GiB + GiB // 2 - 1), **small)
    assert done.returncode == 1 and "1.50 GiB at least" in done.stderr


def test_unknown_modes_fail_and_other_commands_run(stubs: Path) -> None:
    done, _ = run(stubs, MODE="primary")
    assert done.returncode == 1 and "unknown MODE=primary" in done.stderr
    done, calls = run(stubs, "sllm-ray", "status")
    assert done.returncode == 0 and calls == ["sllm-ray status RAY_ADDRESS="]


class _Ready(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_health_is_the_readiness_route(stubs: Path, ready_server: http.server.HTTPServer) -> None:
    port = str(ready_server.server_address[1])
    _Ready.status = 200
    assert run(stubs, "health", SLLM_RAY_HTTP_PORT=port)[0].returncode == 0
    _Ready.status = 503
    done, _ = run(stubs, "health", SLLM_RAY_HTTP_PORT=port)
    assert done.returncode == 1 and "503" in done.stderr
    ready_server.shutdown()
    ready_server.server_close()  # refused at once, not a connection left to its 5 s timeout
    assert run(stubs, "health", SLLM_RAY_HTTP_PORT=port)[0].returncode == 1


def test_shellcheck_finds_nothing() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("no shellcheck: `make tools` installs Debian's (CI does)")
    done = subprocess.run(["shellcheck", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def test_the_image_runs_it_as_uid_1000_with_a_health_check() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "USER 1000:1000" in dockerfile
    assert 'CMD ["sllm-ray-entrypoint", "health"]' in dockerfile
    assert "deploy/docker/entrypoint.sh /usr/local/bin/sllm-ray-entrypoint" in dockerfile
    assert os.access(ENTRYPOINT, os.X_OK) and shutil.which("bash")
