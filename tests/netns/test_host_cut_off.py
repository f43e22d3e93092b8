"""A host cut off the network mid-stream (its veth link down): every stream on it ends,
resumed on the other host or with an error the client sees, none hangs or stops short
without one; the model moves to the host that is left; the host, brought back, takes
models again."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import httpx
import openai
from hosts_under_test import BASE_URL, HEAD_IP, NODE_IP, NS_RESOURCE, Hosts, alive_ips
from support import replica_record, wait_for

TOKENS = 60


def _model(name: str, model_dir: Path, **settings: object) -> dict:
    return {
        "model": name,
        "model_source": str(model_dir),
        "engine_kwargs": {"fake_token_s": 0.1},  # 60 tokens: 6 s a stream
        "autoscaling": {"keep_alive_s": 300},
        **settings,
    }


def _stream(client: openai.OpenAI, model: str) -> tuple[str, float]:
    """How a stream ended (``done``: every token; ``error: ...``: the client raised;
    ``short``: it stopped early without an error) and when."""
    text = ""
    try:
        for chunk in client.completions.create(model=model, prompt="hi", max_tokens=TOKENS, stream=True):
            text += chunk.choices[0].text if chunk.choices else ""
    except Exception as exc:
        return f"error: {type(exc).__name__}", time.monotonic()
    whole = text == " ".join(f"tok{i}" for i in range(TOKENS))
    return ("done" if whole else "short"), time.monotonic()


def _node_id(ip: str) -> str:
    import ray

    (node,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerAddress"] == ip]
    return node


def test_a_host_cut_off_mid_stream_ends_every_stream_and_its_model_moves(
    hosts: Hosts, admin: httpx.Client, tiny_model_dir: Path
) -> None:
    from ray.util import placement_group, remove_placement_group

    client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", max_retries=0, timeout=120)
    head = _node_id(HEAD_IP)
    # The head's CPUs held, so that the first replica can only go to the other host.
    filler = placement_group([{"CPU": 2, f"node:{HEAD_IP}": 0.001}])
    assert filler.wait(60)
    far = _model("far", tiny_model_dir, resources={"num_cpus": 0.25})
    assert admin.post("/v1/admin/models", json=far).status_code == 201
    assert _stream(client, "far")[0] == "done"
    assert replica_record("far")["node_id"] == _node_id(NODE_IP)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(_stream, client, "far") for _ in range(4)]
        time.sleep(1.5)  # every stream under way
        hosts.cut()
        cut_at = time.monotonic()
        remove_placement_group(filler)  # room on the head for the model's next replica
        ends = [s.result(timeout=120) for s in streams]
    assert all(how == "done" or how.startswith("error") for how, _ in ends), ends
    assert max(at for _, at in ends) - cut_at < 60, ends  # nothing hangs
    wait_for(lambda: NODE_IP not in alive_ips(), 30, "Ray to see the host gone")
    # The model moved to the host that is left.
    assert _stream(client, "far")[0] == "done"
    assert replica_record("far")["node_id"] == head
    # Brought back: the host's old node is dead for Ray; a new one joins and takes models.
    hosts.reconnect()
    hosts.restart_node()
    back = _model("back", tiny_model_dir, resources={"num_cpus": 0.25, "custom": {NS_RESOURCE: 0.1}})
    assert admin.post("/v1/admin/models", json=back).status_code == 201
    assert _stream(client, "back")[0] == "done"
    assert replica_record("back")["node_id"] == _node_id(NODE_IP)
    for name in ("far", "back"):
        assert admin.delete(f"/v1/admin/models/{name}").status_code == 200
