"""An ingress replica killed (SIGKILL) while streams are in flight, with two of them (the
suite's app runs two): a stream the killed replica held ends with an error the client
sees (its connection closes before the chunked body ends: the official client raises
``openai.APIConnectionError``), never as an end with tokens missing; the other replica's
streams complete; new requests are answered at once, and Serve replaces the replica."""

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

from sllm_ray.builder import INGRESS_NAME

TOKENS = 60


def _ingress_pids() -> set[int]:
    title = f"ServeReplica:{APP}:{INGRESS_NAME}"
    return {p.pid for p in psutil.process_iter(["cmdline"]) if title in " ".join(p.info["cmdline"] or ())}


def _stream(client: openai.OpenAI, model: str) -> str:
    """How a stream ended, as the official client sees it: ``done`` (every token),
    ``cut: <error>`` (the connection closed mid-body: the client raises) or ``silent``
    (an end with tokens missing and no error: what must never happen)."""
    text = ""
    try:
        for chunk in client.completions.create(model=model, prompt="hi", max_tokens=TOKENS, stream=True):
            text += chunk.choices[0].text if chunk.choices else ""
    except Exception as exc:
        return f"cut: {type(exc).__module__}.{type(exc).__name__}"
    return "done" if text == " ".join(f"tok{i}" for i in range(TOKENS)) else "silent"


def test_an_ingress_replica_killed_mid_stream_cuts_only_its_own_streams_and_the_other_serves_on(
    fake_app: str, fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    from ray import serve

    steady = fake_model("steady-ingress", tiny_model_dir, autoscaling={"keep_alive_s": 300})
    steady["engine_kwargs"] = {"fake_token_s": 0.05}  # 60 tokens: 3 s a stream
    assert fake_admin.post("/v1/admin/models", json=steady).status_code == 201
    assert _stream(fake_client, "steady-ingress") == "done"
    pids = _ingress_pids()
    assert len(pids) == 2, pids
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        streams = [pool.submit(_stream, fake_client, "steady-ingress") for _ in range(8)]
        time.sleep(1.0)  # every stream under way
        killed = min(pids)
        os.kill(killed, signal.SIGKILL)
        started = time.monotonic()
        # New requests: answered by the other replica, at once or after one retry of Serve's proxy.
        reply = httpx.post(
            f"{fake_app}/v1/completions",
            json={"model": "steady-ingress", "prompt": "hi", "max_tokens": 2},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        assert time.monotonic() - started < 10
        ends = [s.result(timeout=60) for s in streams]
    assert "silent" not in ends, ends
    assert ends.count("done") >= 1, ends  # the other replica's streams were not touched
    assert {e for e in ends if e != "done"} <= {"cut: openai.APIConnectionError"}, ends

    def replaced() -> bool:
        app = serve.status().applications[APP].deployments[INGRESS_NAME]
        return app.replica_states.get("RUNNING", 0) == 2 and killed not in _ingress_pids()

    wait_for(replaced, 60, "Serve to replace the ingress replica")
    assert fake_admin.delete("/v1/admin/models/steady-ingress").status_code == 200
