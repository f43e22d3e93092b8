"""A control plane that fails alone: the model manager and the node's checkpoint store
killed (SIGKILL) while streams are in flight cut none of them, and the data path (ingress,
model replicas, the node's pool and its hosts) keeps serving, cold starts included, while
Serve restarts the manager and Ray the store."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import psutil
from fake_app import APP, fake_model
from support import wait_for

from sllm_ray.names import MANAGER_NAME, named_actor, store_name

TOKENS = 60


def _stream_text(client: openai.OpenAI, model: str, max_tokens: int) -> str:
    text = ""
    for chunk in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens, stream=True
    ):
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    return text


def _manager_pid() -> int:
    """The manager replica's process (Ray titles it after the replica's actor)."""
    title = f"ServeReplica:{APP}:{MANAGER_NAME}"
    (pid,) = {p.pid for p in psutil.process_iter(["cmdline"]) if title in " ".join(p.info["cmdline"] or ())}
    return pid


def _node(admin: httpx.Client) -> dict:
    (node,) = admin.get("/status").json()["nodes"]
    return node


def _pool(admin: httpx.Client) -> dict:
    return _node(admin)["engine_hosts"]


def _store_pid(node_id: str) -> int:
    """The process of the node's checkpoint store (asked of the actor: Ray's state API needs
    the dashboard, which the test session does not start)."""
    import ray

    store = named_actor(store_name(APP, node_id))
    return ray.get(store.__ray_call__.remote(lambda _: os.getpid()), timeout=10)


def test_the_manager_and_the_store_killed_mid_stream_cut_no_stream_and_the_data_path_keeps_serving(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    steady = fake_model("steady", tiny_model_dir, autoscaling={"keep_alive_s": 300})
    steady["engine_kwargs"] = {"fake_token_s": 0.05}  # 60 tokens: 3 s a stream
    assert fake_admin.post("/v1/admin/models", json=steady).status_code == 201
    assert fake_admin.post("/v1/admin/models", json=fake_model("later", tiny_model_dir)).status_code == 201
    assert _stream_text(fake_client, "steady", 2) == "tok0 tok1"
    launcher_before = _pool(fake_admin)["launcher"]["pid"]
    manager, store = _manager_pid(), _store_pid(_node(fake_admin)["node_id"])
    whole = " ".join(f"tok{i}" for i in range(TOKENS))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(_stream_text, fake_client, "steady", TOKENS) for _ in range(8)]
        time.sleep(1.0)  # every stream under way
        os.kill(manager, signal.SIGKILL)
        os.kill(store, signal.SIGKILL)
        # A cold start while the store is down: its weights come from the source.
        assert _stream_text(fake_client, "later", 2) == "tok0 tok1"
        # Meanwhile a known model answers, and an admin call is a 503 with Retry-After (or,
        # once Serve has the manager back, an answer): neither hangs nor is a 500.
        assert _stream_text(fake_client, "steady", 2) == "tok0 tok1"
        started = time.monotonic()
        listed = fake_admin.get("/v1/admin/models")
        assert time.monotonic() - started < 15
        assert listed.status_code in (200, 503), listed.text
        if listed.status_code == 503:
            assert "manager" in listed.json()["error"]["message"] and listed.headers["retry-after"]
        assert [s.result(timeout=60) for s in streams] == [whole] * 8
    wait_for(lambda: fake_admin.get("/v1/admin/models/steady").status_code == 200, 60, "the manager back")
    # The ingresses take the restarted manager's model list (its snapshots count from 0 again).
    assert fake_admin.post("/v1/admin/models", json=fake_model("newer", tiny_model_dir)).status_code == 201
    assert [_stream_text(fake_client, "newer", 2) for _ in range(4)] == ["tok0 tok1"] * 4
    # The data path was not restarted: the node's pool (and so its launcher) is the one from before.
    assert _pool(fake_admin)["launcher"]["pid"] == launcher_before
    assert _manager_pid() != manager

    def restarted() -> bool:
        try:
            return _store_pid(_node(fake_admin)["node_id"]) != store
        except Exception:  # still restarting
            return False

    wait_for(restarted, 30, "Ray to restart the store")
    for name in ("steady", "later", "newer"):
        assert fake_admin.delete(f"/v1/admin/models/{name}").status_code == 200
