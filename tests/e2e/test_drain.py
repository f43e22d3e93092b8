"""SIGTERM to ``sllm-ray serve`` drains: streams in flight finish, new requests get 503 with
``Retry-After``, ``/ready`` turns 503, a stream longer than ``drain_timeout_s`` is cut at
that bound with an error event that says so, and the process exits 0.

A real ``serve run`` in a Ray instance of its own (a subprocess: it is how containers stop
the app), with the fake engine, whose streaming path through the ingress is the real one.
In the end-to-end suite, not the Serve-level one: it starts a whole second Ray instance
(about 40 s on 2 cores, most of ``make test-fast``'s budget).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from support import model_body, wait_for

from sllm_ray.testing.fake_engine import FAKE_ENGINE

STREAMS = 4
TOKENS = 16
TOKEN_S = 0.25  # each stream: 4 s, most of it after SIGTERM
DRAIN_S = 8.0
LONG_TOKENS = 240  # 60 s: beyond the drain's bound


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "sllm-ray serve exited before it was ready"
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"not ready within {timeout_s} s")


def test_sigterm_drains_streams_then_exits_0(tmp_path: Path, tiny_model_dir: Path) -> None:
    from openai import OpenAI

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    dram = Path("/dev/shm") / f"sllm_ray_drain_test_{os.getpid()}"
    model = model_body(
        "drained",
        tiny_model_dir,
        {"max_model_len": 512, "fake_token_s": TOKEN_S},
        resources={"num_cpus": 0.25},
        autoscaling={"min_replicas": 1},
    )
    config = {
        "http_options": {"host": "127.0.0.1", "port": 8000},  # the environment's port wins
        "applications": [
            {
                "name": "drained",
                "route_prefix": "/",
                "import_path": "sllm_ray.builder:build_app",
                "args": {"engine_cls": FAKE_ENGINE, "models": [model], "replica_workers_per_node": 0},
            }
        ],
    }
    config_file = tmp_path / "serve.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "SLLM_RAY_"))}
    env.update(
        SLLM_RAY_HTTP_PORT=str(port),
        SLLM_RAY_DATA_DIR=str(tmp_path / "data"),  # the rest of the app's config from the environment
        SLLM_RAY_STORE_DRAM_DIR=str(dram),
        SLLM_RAY_MODEL_ROOTS=str(tiny_model_dir.parent),
        SLLM_RAY_DRAIN_TIMEOUT_S=str(DRAIN_S),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sllm_ray.cli", "serve", str(config_file)], env=env, cwd=tmp_path
    )
    try:
        _wait_ready(url, process)
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        client.completions.create(model="drained", prompt="warm", max_tokens=1)  # the replica is up

        first_events = threading.Barrier(STREAMS + 2, timeout=30)
        texts: dict[int, list[str]] = {}
        finished: dict[int, str | None] = {}
        cut: list[Exception] = []

        def stream(i: int) -> None:
            texts[i] = []
            tokens = LONG_TOKENS if i == STREAMS else TOKENS
            chunks = client.completions.create(model="drained", prompt="hi", max_tokens=tokens, stream=True)
            try:
                for n, chunk in enumerate(chunks):
                    texts[i].append(chunk.choices[0].text)
                    finished[i] = chunk.choices[0].finish_reason
                    if n == 0:
                        first_events.wait()
            except Exception as exc:  # the long one: cut at the drain's bound
                if i != STREAMS:
                    raise
                cut.append(exc)

        # STREAMS streams that end within the drain, and one that does not.
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(STREAMS + 1)]
        for thread in threads:
            thread.start()
        first_events.wait()  # every stream is under way
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Within the ingress's next poll (1 s; more on the loaded 2-core machine) new
        # requests are refused and /ready is 503.
        probe = {"model": "drained", "prompt": "x", "max_tokens": 1}

        def refused_now() -> httpx.Response | None:
            reply = httpx.post(f"{url}/v1/completions", json=probe, timeout=10)
            return reply if reply.status_code != 200 else None

        refused = wait_for(refused_now, 8, "new requests to be refused", interval_s=0.25)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "5"
        assert "draining" in refused.json()["error"]["message"]
        ready = httpx.get(f"{url}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["ready"] is False

        for thread in threads:
            thread.join(60)
        assert process.wait(60) == 0
        stopped_s = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        left = dram.exists() and any(dram.iterdir())
        shutil.rmtree(dram, ignore_errors=True)
    # Every stream within the bound got all its tokens and its end, though most came after
    # SIGTERM; the long one was cut once the bound was reached, long before its end.
    long = texts.pop(STREAMS)
    assert {i: len(t) for i, t in texts.items()} == dict.fromkeys(range(STREAMS), TOKENS)
    assert {i: finished[i] for i in texts} == dict.fromkeys(range(STREAMS), "length")
    assert DRAIN_S / TOKEN_S <= len(long) < LONG_TOKENS and finished[STREAMS] is None
    # With a last event that says why, while the ingress was up (so its replica stopped too).
    assert len(cut) == 1 and "outlasted drain_timeout_s" in str(cut[0]), cut
    # The drain's bound, then Serve's shutdown (seconds); not the long stream's 60 s.
    assert DRAIN_S <= stopped_s < DRAIN_S + 20, stopped_s
    # The stores freed their DRAM tiers (/dev/shm) as they stopped.
    assert not left
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=5)
