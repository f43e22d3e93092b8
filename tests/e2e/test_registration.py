"""Registration: engine memory derived when a model names none, what no node can hold
refused with the field named, and many registrations back to back and at once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from app_under_test import ENGINE_KWARGS

from sllm_ray.config import CPU_KV_CACHE_BYTES

# The demo's engine arguments without a KV-cache size.
NO_KV = {k: v for k, v in ENGINE_KWARGS.items() if k != "kv_cache_memory_bytes"}
PiB = 1024**5
# Small and quick to go back to zero: many of these share the 2-core machine.
LIGHT = {"resources": {"num_cpus": 0.25}, "autoscaling": {"keep_alive_s": 2, "look_back_period_s": 2}}


def _body(name: str, source: Path, engine_kwargs: dict = NO_KV, **settings: object) -> dict:
    return {"model": name, "model_source": str(source), "engine_kwargs": engine_kwargs, **LIGHT, **settings}


def _answers(client: openai.OpenAI, model: str) -> bool:
    reply = client.completions.create(
        model=model, prompt="Once", max_tokens=2, extra_body={"ignore_eos": True}
    )
    return reply.usage.completion_tokens == 2


def test_a_model_without_a_kv_cache_size_starts_and_answers(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    registered = admin.post("/v1/admin/models", json=_body("no-kv", tiny_model_dir))
    assert registered.status_code == 201, registered.text
    try:
        described = admin.get("/v1/admin/models/no-kv").json()
        assert described["config"]["engine_kwargs"] == NO_KV  # stored as given
        assert described["effective_engine_kwargs"] == {**NO_KV, "kv_cache_memory_bytes": CPU_KV_CACHE_BYTES}
        assert _answers(client, "no-kv")
    finally:
        admin.delete("/v1/admin/models/no-kv")


@pytest.mark.parametrize(
    ("settings", "param"),
    [
        (
            {"engine_kwargs": {**NO_KV, "max_model_len": 4096}},
            "engine_kwargs.max_model_len",
        ),  # 2048 positions
        ({"resources": {"num_gpus": 1}}, "resources.num_gpus"),  # no GPU here
        ({"resources": {"memory_bytes": PiB}}, "resources.memory_bytes"),
        ({"engine_kwargs": {**NO_KV, "kv_cache_memory_bytes": PiB}}, "engine_kwargs.kv_cache_memory_bytes"),
        ({"resources": {"num_cpus": 1000}}, "resources.num_cpus"),
    ],
)
def test_what_no_node_can_hold_is_refused(
    admin: httpx.Client, tiny_model_dir: Path, settings: dict, param: str
) -> None:
    response = admin.post("/v1/admin/models", json={**_body("unfit", tiny_model_dir), **settings})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param
    assert admin.get("/v1/admin/models/unfit").status_code == 404
    patched = admin.patch("/v1/admin/models/tiny", json=settings)  # a PATCH is checked the same way
    assert patched.status_code == 422 and patched.json()["error"]["param"] == param


def test_eight_back_to_back_and_eight_at_once(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    serial = [f"serial-{i}" for i in range(8)]
    burst = [f"burst-{i}" for i in range(8)]
    try:
        for name in serial:
            response = admin.post("/v1/admin/models", json=_body(name, tiny_model_dir, ENGINE_KWARGS))
            assert response.status_code == 201, response.text
        codes: list[int] = []

        def register(name: str) -> None:
            body = _body(name, tiny_model_dir, ENGINE_KWARGS)
            codes.append(admin.post("/v1/admin/models", json=body).status_code)

        threads = [threading.Thread(target=register, args=(name,)) for name in burst]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert Counter(codes) == {201: 8}
        listed = {m.id for m in client.models.list().data}
        assert set(serial + burst) <= listed
        # One of each group answers: the deploys that overlapped left working apps (each
        # of the 16 answering costs a cold start, minutes on the 2-core machine).
        assert _answers(client, serial[-1]) and _answers(client, burst[0])
    finally:
        for name in serial + burst:
            admin.delete(f"/v1/admin/models/{name}")
