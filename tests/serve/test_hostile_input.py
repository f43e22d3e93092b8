"""Hostile and mistaken input against the real ingress and manager (fake engine): every
answer is a 4xx in OpenAI's shape with nothing internal in it, nothing invalid is stored,
and the server answers a normal request afterwards."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
from fake_app import fake_model

import sllm_ray

REPO = Path(sllm_ray.__file__).resolve().parent.parent

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
ADMIN = "/v1/admin/models"
HI = [{"role": "user", "content": "hi"}]
# What an answer must not carry: Ray's error text, process ids, addresses, the installation's
# files. (Admin answers may name model folders: the admin gave them.)
INTERNALS = ("pid=", "ip=", "Traceback", "RayTaskError", "ActorID", "site-packages", str(REPO))


def _chat(**extra: object) -> bytes:
    return json.dumps({"model": "warm", "messages": HI, "max_tokens": 2, **extra}).encode()


def _raw(route: str, body: bytes, method: str = "POST") -> tuple[str, str, bytes]:
    return method, route, body


def _register(model_dir: Path, name: str = "hostile", **settings: object) -> bytes:
    return json.dumps(fake_model(name, model_dir, **settings)).encode()


def _cases(model_dir: Path) -> list[tuple[str, str, bytes]]:
    deep = b"[" * 2000 + b"]" * 2000
    return [
        # Bodies the JSON parser must refuse, not fail on.
        _raw(CHAT, b'{"model": "warm", "messages": ' + deep + b"}"),
        _raw(CHAT, b'{"model": "warm", "messages": [], "max_tokens": ' + b"7" * 5001 + b"}"),
        _raw(CHAT, b'{"model": "\\ud800", "messages": []}'),
        _raw(CHAT, b'{"model": "warm", "messages": [], "logprobs": true, "top_logprobs": "\\ud800"}'),
        _raw(CHAT, b'{"model": "warm", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'),
        _raw(CHAT, b'{"model": "warm", "messages": [], "temperature": NaN}'),
        _raw(CHAT, b"{oops"),
        _raw(CHAT, b"[1, 2]"),
        _raw(CHAT, b'{"model": 5, "messages": []}'),
        _raw(CHAT, b'{"model": "a/../warm", "messages": []}'),
        _raw(CHAT, _chat(model="nope")),
        # Requests beyond the model's request limits.
        _raw(CHAT, _chat(n=1000)),
        _raw(CHAT, _chat(logprobs=True, top_logprobs=1000)),
        _raw(CHAT, _chat(stop=["x"] * 100)),
        _raw(CHAT, _chat(max_tokens=10**9)),
        _raw(CHAT, _chat(messages=[{"role": "user", "content": "x" * 200_000}])),
        _raw(COMPLETIONS, json.dumps({"model": "warm", "prompt": ["x"] * 2000}).encode()),
        _raw(COMPLETIONS, json.dumps({"model": "warm", "prompt": "x", "best_of": 1000}).encode()),
        # Admin input that would poison the registry or that Serve would refuse later.
        _raw(ADMIN, _register(model_dir)[:-1] + b', "autoscaling": {"keep_alive_s": Infinity}}'),
        _raw(ADMIN, _register(model_dir)[:-1] + b', "autoscaling": {"keep_alive_s": 1e999}}'),
        _raw(ADMIN, _register(model_dir, autoscaling={"max_replicas": 10**6})),
        _raw(ADMIN, _register(model_dir, autoscaling={"demand_push_interval_s": 1e-9})),
        _raw(ADMIN, _register(model_dir, engine_kwargs={"max_model_len": -1})),
        _raw(ADMIN, _register(model_dir, engine_kwargs={"trust_remote_code": True})),
        _raw(ADMIN, _register(model_dir, engine_kwargs={"tokenizer": "/etc"})),
        _raw(ADMIN, _register(model_dir, model_source="models/does-not-exist")),
        _raw(ADMIN, _register(model_dir, name="a/../b")),
        _raw(ADMIN, _register(model_dir, unknown=1)),
        _raw(f"{ADMIN}/warm", json.dumps({"autoscaling": {"max_replicas": 1e30}}).encode(), "PATCH"),
        _raw(f"{ADMIN}/warm", json.dumps({"autoscaling": "fast"}).encode(), "PATCH"),
        _raw(f"{ADMIN}/nope", b"", "GET"),
        _raw(f"{ADMIN}/nope", b"", "DELETE"),
        _raw(f"{ADMIN}/nope", json.dumps({"max_ongoing_requests": 2}).encode(), "PATCH"),
        # ServerlessLLM's JSON: a string where an object belongs, unknown fields, 1e29 instances.
        _raw("/register", json.dumps({"model": "hostile", "auto_scaling_config": "fast"}).encode()),
        _raw("/register", json.dumps({"model": "hostile", "backend_config": [["a", 1]]}).encode()),
        _raw("/register", json.dumps({"model": "hostile", "unknown": 1}).encode()),
        _raw(
            "/register",
            json.dumps({"model": "hostile", "auto_scaling_config": {"max_instances": 1e29}}).encode(),
        ),
        _raw("/update", json.dumps({"model": "warm", "backend_config": "x"}).encode()),
        _raw(
            "/update", json.dumps({"model": "warm", "auto_scaling_config": {"max_instances": 1e29}}).encode()
        ),
        _raw("/update", json.dumps({"model": "nope", "auto_scaling_config": {"max_instances": 2}}).encode()),
        _raw("/delete", json.dumps({"model": ["warm"]}).encode()),
    ]


def _assert_client_error(reply: httpx.Response, case: tuple[str, str, bytes]) -> None:
    assert 400 <= reply.status_code < 500, (case[:2], case[2][:200], reply.status_code, reply.text)
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == reply.status_code and body["error"]["message"]
    leaked = [s for s in INTERNALS if s in reply.text]
    assert not leaked, (case[:2], leaked, reply.text)


def test_hostile_input_gets_4xx_in_openai_shape_and_the_server_keeps_serving(
    fake_admin: httpx.Client, fake_client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    def stored() -> dict[str, Any]:
        return {m["model"]: m["config"] for m in fake_admin.get(ADMIN).json()["data"]}

    before = stored()
    headers = {"content-type": "application/json"}
    for case in _cases(tiny_model_dir):
        method, route, body = case
        _assert_client_error(fake_admin.request(method, route, content=body, headers=headers), case)
    # Nothing was stored, nothing changed.
    assert stored() == before
    reply = fake_client.chat.completions.create(model="warm", messages=HI, max_tokens=2)
    assert reply.choices[0].message.content == "tok0 tok1"


def test_a_record_that_no_longer_loads_is_listed_invalid_and_can_be_fixed_or_deleted(
    fake_admin: httpx.Client, tiny_model_dir: Path, fake_data_dir: Path
) -> None:
    for name in ("stale", "stale-2"):
        assert fake_admin.post(ADMIN, json=fake_model(name, tiny_model_dir)).status_code == 201
    # What an older version or a hand edit leaves: keep_alive_s stored as null.
    poisoned: dict[str, Any] = {**fake_model("stale", tiny_model_dir), "autoscaling": {"keep_alive_s": None}}
    with sqlite3.connect(fake_data_dir / "registry.sqlite") as conn:
        for name in ("stale", "stale-2"):
            conn.execute(
                "UPDATE models SET config = ? WHERE name = ?", (json.dumps({**poisoned, "model": name}), name)
            )
    listed = {m["model"]: m for m in fake_admin.get(ADMIN).json()["data"]}
    assert listed["stale"]["state"] == "invalid" and "keep_alive_s" in listed["stale"]["invalid_reason"]
    assert listed["warm"]["state"] == "active"
    one = fake_admin.get(f"{ADMIN}/stale")
    assert one.status_code == 200 and one.json()["state"] == "invalid"
    # Lookups of other models still answer as before.
    assert fake_admin.post(CHAT, json={"model": "nope", "messages": HI}).status_code == 404
    # Fixed by a PATCH over the stored fields; deleted as is.
    fixed = fake_admin.patch(f"{ADMIN}/stale", json={"autoscaling": {"keep_alive_s": 1}})
    assert fixed.status_code == 200, fixed.text
    assert fake_admin.get(f"{ADMIN}/stale").json()["state"] == "active"
    assert fake_admin.delete(f"{ADMIN}/stale-2").status_code == 200
    assert fake_admin.get(f"{ADMIN}/stale-2").status_code == 404
    assert fake_admin.delete(f"{ADMIN}/stale").status_code == 200
