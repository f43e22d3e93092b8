"""The admin API against the real app: register, serve, update, delete; every error."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from app_under_test import APP_NAME, ENGINE_KWARGS, model_body
from openai.types.chat import ChatCompletion
from support import sllm_auto_scaling, wait_for

CHAT = {"messages": [{"role": "user", "content": "hello"}], "extra_body": {"ignore_eos": True}}


def _chat(client: openai.OpenAI, model: str, **kwargs: object) -> tuple[ChatCompletion, str]:
    """A chat completion and the replica that answered it."""
    raw = client.chat.completions.with_raw_response.create(model=model, **{**CHAT, **kwargs})
    return raw.parse(), raw.headers["x-sllm-replica"]


def _is_error(resp: httpx.Response, status: int, fragment: str = "") -> bool:
    error = resp.json()["error"]
    assert resp.status_code == status, resp.text
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    assert fragment in error["message"], error["message"]
    return True


def test_register_serve_update_and_delete(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path, replicas: Callable
) -> None:
    body = model_body("reg-a", tiny_model_dir, autoscaling={"keep_alive_s": 600})
    created = admin.post("/v1/admin/models", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["config"]["autoscaling"]["min_replicas"] == 0
    described = admin.get("/v1/admin/models/reg-a").json()
    assert described["replicas"] == {} and described["checkpoint"]["source"] == str(tiny_model_dir)
    assert "reg-a" in [m.id for m in client.models.list().data]

    reply, replica = _chat(client, "reg-a", max_tokens=3)  # from zero replicas
    assert reply.usage.completion_tokens == 3
    # vLLM's fingerprint of the engine's config (computed once per build: vllm_compat).
    assert reply.system_fingerprint is not None and reply.system_fingerprint.startswith("vllm-")
    described = admin.get("/v1/admin/models/reg-a").json()
    assert described["replicas"] == {"RUNNING": 1} and described["last_used"] is not None

    # Autoscaling and limits change in place: same replica, new limit at once.
    patched = admin.patch(
        "/v1/admin/models/reg-a", json={"autoscaling": {"max_replicas": 2}, "max_tokens_limit": 4}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["replicas_rolled"] is False
    reply, same = _chat(client, "reg-a")
    assert same == replica and reply.usage.completion_tokens == 4  # the cap filled in
    with pytest.raises(openai.BadRequestError, match="at most 4"):
        client.chat.completions.create(model="reg-a", max_tokens=10, **CHAT)

    # Engine arguments roll the replicas.
    patched = admin.patch(
        "/v1/admin/models/reg-a",
        json={"engine_kwargs": {**ENGINE_KWARGS, "max_num_seqs": 8}, "max_tokens_limit": None},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["replicas_rolled"] is True
    assert patched.json()["config"]["engine_kwargs"]["max_num_seqs"] == 8
    # The PATCH returns once Serve has the new version; the old replica serves until the
    # new one takes over.
    wait_for(lambda: _chat(client, "reg-a", max_tokens=2)[1] != replica, 240, "the replicas to be rolled")

    # Delete: new requests get 404 at once, the one in flight finishes.
    stream = client.chat.completions.create(
        model="reg-a", stream=True, max_tokens=400, stream_options={"include_usage": True}, **CHAT
    )
    chunks = [next(stream)]
    deleted: list[httpx.Response] = []
    deleter = threading.Thread(target=lambda: deleted.append(admin.delete("/v1/admin/models/reg-a")))
    deleter.start()

    def refused() -> bool:
        try:
            client.completions.create(model="reg-a", prompt="x", max_tokens=1)
        except openai.NotFoundError:
            return True
        return False

    wait_for(refused, 30, "the deleted model to be refused", interval_s=0)
    refused_at = time.monotonic()
    chunks += list(stream)
    finished_at = time.monotonic()
    deleter.join()
    assert deleted[0].status_code == 200, deleted[0].text
    assert chunks[-1].usage.completion_tokens == 400
    assert finished_at > refused_at  # the stream was still running when the model went
    assert _is_error(admin.get("/v1/admin/models/reg-a"), 404)
    assert "reg-a" not in [m.id for m in client.models.list().data]
    from ray import serve

    assert not [a for a in serve.status().applications if a.startswith(f"{APP_NAME}-model-reg-a")]


def test_invalid_registrations_store_nothing(
    admin: httpx.Client, tiny_model_dir: Path, tmp_path: Path
) -> None:
    source = str(tiny_model_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    no_weights = tiny_model_dir.parent / "no-weights"  # inside the allowed roots
    no_weights.mkdir(exist_ok=True)
    (no_weights / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    cases = [
        ({"model": "bad-1", "model_source": source, "colour": "red"}, "colour"),
        ({"model": "bad-2", "model_source": source, "autoscaling": {"min_replicas": 3}}, "must not exceed"),
        ({"model": "bad-3", "model_source": source, "autoscaling": {"keep_alive_s": -5}}, "keep_alive_s"),
        ({"model": "bad-4", "model_source": source, "max_queued_requests": -1}, "max_queued_requests"),
        ({"model": "bad-6", "model_source": str(outside)}, "outside the allowed model roots"),
        ({"model": "bad-7", "model_source": f"{source}/../../{outside.parent.name}"}, "outside"),
        ({"model": "bad-8", "model_source": source, "engine_kwargs": {"no_such_arg": 1}}, "no_such_arg"),
        ({"model": "bad-9", "model_source": str(no_weights)}, "no weights"),
        # Values vLLM's own argument parser refuses, found at registration.
        ({"model": "bad-10", "model_source": source, "engine_kwargs": {"dtype": "float99"}}, "'float99'"),
        ({"model": "bad-11", "model_source": source, "engine_kwargs": {"seed": "x"}}, "--seed: invalid"),
        ({"model_source": source}, "model"),
    ]
    for body, fragment in cases:
        assert _is_error(admin.post("/v1/admin/models", json=body), 422, fragment)
    missing = {"model": "bad-5", "model_source": f"{source}-missing"}  # names nothing: a 404
    assert _is_error(admin.post("/v1/admin/models", json=missing), 404, "does not exist")
    assert _is_error(admin.post("/v1/admin/models", json={"model": "tiny", "model_source": source}), 409)
    assert _is_error(admin.post("/v1/admin/models", content=b"{nope"), 400)
    names = [m["model"] for m in admin.get("/v1/admin/models").json()["data"]]
    assert not [n for n in names if n.startswith("bad-")]

    for method in ("GET", "PATCH", "DELETE"):
        assert _is_error(admin.request(method, "/v1/admin/models/nope", json={}), 404, "nope")
    before = admin.get("/v1/admin/models/tiny").json()["config"]
    bad_patch = admin.patch("/v1/admin/models/tiny", json={"autoscaling": {"min_replicas": 9}})
    assert _is_error(bad_patch, 422, "must not exceed")
    assert _is_error(admin.patch("/v1/admin/models/tiny", json={"model": "renamed"}), 422, "model")
    assert admin.get("/v1/admin/models/tiny").json()["config"] == before


def test_concurrent_registrations(admin: httpx.Client, tiny_model_dir: Path) -> None:
    names = [f"conc-{i}" for i in range(4)]
    codes: list[tuple[str, int]] = []

    def register(name: str) -> None:
        resp = admin.post("/v1/admin/models", json={"model": name, "model_source": str(tiny_model_dir)})
        codes.append((name, resp.status_code))

    threads = [threading.Thread(target=register, args=(n,)) for n in names * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(codes) == Counter({(n, 201): 1 for n in names} | {(n, 409): 1 for n in names})
    listed = Counter(m["model"] for m in admin.get("/v1/admin/models").json()["data"])
    assert all(listed[n] == 1 for n in names)

    def delete(name: str) -> None:
        codes.append((name, admin.delete(f"/v1/admin/models/{name}").status_code))

    threads = [threading.Thread(target=delete, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes[-4:] and all(code == 200 for _, code in codes[-4:])
    listed = {m["model"] for m in admin.get("/v1/admin/models").json()["data"]}
    assert not listed & set(names)


def test_serverlessllm_api(admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path) -> None:
    # ServerlessLLM's default deployment config (sllm/cli/default_config.json) with this
    # machine's values: no GPU, the local model, float32 weights, a short context.
    config = {
        "model": "sllm-style",
        "backend": "vllm",
        "num_gpus": 0,
        "auto_scaling_config": sllm_auto_scaling(60),  # warm across the tests
        "backend_config": {
            "pretrained_model_name_or_path": str(tiny_model_dir),
            "device_map": "auto",
            "dtype": "float32",
            "hf_model_class": "AutoModelForCausalLM",
            **ENGINE_KWARGS,
        },
    }
    registered = admin.post("/register", json=config)
    assert registered.status_code == 200, registered.text
    stored = registered.json()["config"]
    assert stored["engine_kwargs"] == {"dtype": "float32", **ENGINE_KWARGS}
    assert stored["autoscaling"]["max_replicas"] == 10 and stored["resources"]["num_gpus"] == 0
    reply, _ = _chat(client, "sllm-style", max_tokens=2)
    assert reply.usage.completion_tokens == 2

    updated = admin.post("/update", json={"model": "sllm-style", "auto_scaling_config": {"max_instances": 2}})
    assert updated.status_code == 200 and updated.json()["replicas_rolled"] is False
    status = {m["model"]: m for m in admin.get("/status").json()["models"]}
    assert status["sllm-style"]["config"]["autoscaling"]["max_replicas"] == 2
    assert status["sllm-style"]["replicas"] == {"RUNNING": 1}

    assert _is_error(admin.post("/register", json={**config, "backend": "transformers"}), 422, "backend")
    assert admin.post("/delete", json={"model": "sllm-style"}).status_code == 200
    assert _is_error(admin.post("/delete", json={"model": "sllm-style"}), 404)


def test_limits(admin: httpx.Client, client: openai.OpenAI) -> None:
    # 413: the body size limit (1 MiB by default).
    huge = b'{"model": "tiny", "prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    assert _is_error(admin.post("/v1/completions", content=huge), 413)

    # 429: `unplaceable` never gets a replica, so its requests wait in Serve's queue.
    patch = {"max_queued_requests": 1, "request_wait_timeout_s": 6}
    assert admin.patch("/v1/admin/models/unplaceable", json=patch).status_code == 200
    try:
        body = {"model": "unplaceable", "prompt": "hi", "max_tokens": 1}
        first: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: first.append(admin.post("/v1/completions", json=body)))
        waiter.start()
        time.sleep(1.5)
        second = admin.post("/v1/completions", json=body)
        waiter.join()
        assert _is_error(second, 429, "unplaceable")
        assert second.headers["retry-after"] == "7"
        assert first[0].status_code == 503  # the queued one still got its answer
    finally:
        restore = {"max_queued_requests": None, "request_wait_timeout_s": 2}
        assert admin.patch("/v1/admin/models/unplaceable", json=restore).status_code == 200
    assert client.models.retrieve("tiny").id == "tiny"
