"""LoRA adapters on a shared base, registered as ServerlessLLM users do, served by real vLLM.

One base for the module, registered through ServerlessLLM's ``/register`` with its default
config (``num_gpus`` 0 on this CPU node, ``torch_dtype``, ``device_map``, ``hf_model_class``)
plus ``enable_lora`` and one adapter; the first request, for that adapter, starts the base
from zero replicas. Adapters are random PEFT folders with nonzero B matrices
(``sllm_ray.tools.tiny_lora``), so each one's greedy answer is its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from app_under_test import ENGINE_KWARGS
from support import sllm_auto_scaling, wait_for

from sllm_ray.control.manager import NODE_SYNC_S
from sllm_ray.tools.tiny_lora import make_tiny_lora

BASE = "sllm-lora-base"
# ServerlessLLM's `sllm deploy` default config (sllm/cli/default_config.json), for a CPU node.
SLLM_DEFAULT = {
    "backend": "vllm",
    "num_gpus": 0,
    "auto_scaling_config": sllm_auto_scaling(600),  # warm across the tests
    "backend_config": {
        "device_map": "auto",
        "torch_dtype": "float16",
        "hf_model_class": "AutoModelForCausalLM",
    },
}
PROMPT = {"prompt": "Once upon", "max_tokens": 12, "temperature": 0, "extra_body": {"ignore_eos": True}}


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path) -> dict[str, Path]:
    """Adapter folders beside the model, inside the app's model roots."""
    root = tiny_model_dir.parent
    return {
        name: make_tiny_lora(tiny_model_dir, root / name, rank=8, seed=seed)
        for seed, name in enumerate(("lora-a", "lora-b", "lora-c"), start=1)
    }


@pytest.fixture(scope="module")
def base(admin: httpx.Client, tiny_model_dir: Path, adapters: dict[str, Path]) -> Iterator[str]:
    body = {
        **SLLM_DEFAULT,
        "model": BASE,
        "backend_config": {
            **SLLM_DEFAULT["backend_config"],
            "pretrained_model_name_or_path": str(tiny_model_dir),
            **ENGINE_KWARGS,
            "enable_lora": True,
            "max_lora_rank": 8,
            "max_loras": 2,
            "lora_adapters": {"lora-a": str(adapters["lora-a"])},
        },
    }
    registered = admin.post("/register", json=body)
    assert registered.status_code == 200, registered.text
    yield BASE
    admin.post("/delete", json={"model": BASE})


def _add(admin: httpx.Client, base: str, adapter: str, source: Path | str) -> httpx.Response:
    return admin.post(f"/v1/admin/models/{base}/adapters", json={"adapter": adapter, "source": str(source)})


def _text(client: openai.OpenAI, model: str) -> str:
    return client.completions.create(model=model, **PROMPT).choices[0].text


def test_adapters_answer_differently_from_the_base_and_each_other(
    admin: httpx.Client, client: openai.OpenAI, base: str, adapters: dict[str, Path], replicas
) -> None:
    assert replicas(base) == {}  # at zero replicas: the adapter's request starts the base
    a = _text(client, "lora-a")
    assert replicas(base).get("RUNNING") == 1
    added = _add(admin, base, "lora-b", adapters["lora-b"])
    assert added.status_code == 201, added.text
    assert added.json() == {"adapter": "lora-b", "source": str(adapters["lora-b"].resolve()), "parent": base}
    b, plain = _text(client, "lora-b"), _text(client, base)
    assert len({a, b, plain}) == 3, (a, b, plain)
    assert _text(client, "lora-a") == a  # greedy: the same again, from the loaded adapter
    # Chat too, through ServerlessLLM's way of naming an adapter beside its base.
    chat = admin.post(
        "/v1/chat/completions",
        json={"model": base, "lora_adapter_name": "lora-b", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 200 and chat.json()["model"] == "lora-b", chat.text
    cards = {m.id: m for m in client.models.list().data}
    assert cards["lora-a"].parent == cards["lora-b"].parent == base  # type: ignore[attr-defined]
    listed = admin.get(f"/v1/admin/models/{base}/adapters").json()["data"]
    assert [a["adapter"] for a in listed] == ["lora-a", "lora-b"]
    (described,) = [m for m in admin.get("/status").json()["models"] if m["model"] == base]
    assert [a["adapter"] for a in described["config"]["adapters"]] == ["lora-a", "lora-b"]
    # ServerlessLLM v1-beta's `name:backend` form.
    assert _text(client, f"{base}:vllm") == plain

    # vLLM loaded both from the node's store, which copied each in once and holds it in DRAM.
    # `/status` shows what the manager last read of the store (every NODE_SYNC_S).
    def both_held() -> bool:
        (node,) = admin.get("/status").json()["nodes"]
        held = node["store"]["adapters"]["adapters"]
        return all(any(key.startswith(f"{name}-") for key in held) for name in ("lora-a", "lora-b"))

    wait_for(both_held, 3 * NODE_SYNC_S, "the node's store to hold both adapters")


def test_adapters_are_checked_at_registration(
    admin: httpx.Client, base: str, tiny_model_dir: Path, tmp_path: Path, adapters: dict[str, Path]
) -> None:
    deep = make_tiny_lora(tiny_model_dir, tiny_model_dir.parent / "lora-deep", rank=16)
    lacking = make_tiny_lora(tiny_model_dir, tiny_model_dir.parent / "lora-gpt2", targets=("c_attn",))
    empty = tiny_model_dir.parent / "lora-empty"
    empty.mkdir(exist_ok=True)
    outside = make_tiny_lora(tiny_model_dir, tmp_path / "lora-outside")
    cases = {
        str(outside): "adapters.source",
        str(empty): "adapters.source",
        str(deep): "adapters.adapter_config.r",
        str(lacking): "adapters.adapter_config.target_modules",
    }
    for source, param in cases.items():
        refused = _add(admin, base, "bad", source)
        assert refused.status_code == 422 and refused.json()["error"]["param"] == param, refused.text
    not_lora = _add(admin, "tiny", "x", deep)
    assert not_lora.status_code == 422 and not_lora.json()["error"]["param"] == "engine_kwargs.enable_lora"
    taken = _add(admin, base, "tiny", adapters["lora-c"])
    assert taken.status_code == 409, taken.text
    assert admin.get("/v1/models/bad").status_code == 404


def test_deleting_an_adapter_lets_its_request_in_flight_finish(
    admin: httpx.Client, client: openai.OpenAI, base: str, adapters: dict[str, Path]
) -> None:
    added = _add(admin, base, "lora-c", adapters["lora-c"])
    assert added.status_code == 201, added.text
    tokens: list[str] = []
    stream = client.completions.create(
        model="lora-c",
        prompt="Once",
        max_tokens=300,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    first = next(iter(stream))
    tokens.append(first.choices[0].text)
    reader = threading.Thread(target=lambda: tokens.extend(c.choices[0].text for c in stream if c.choices))
    reader.start()
    deleted = admin.delete(f"/v1/admin/models/{base}/adapters/lora-c")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True, deleted.text
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="lora-c", prompt="Once", max_tokens=2)
    reader.join(120)
    assert len(tokens) == 300  # the request in flight finished, every token
    # ServerlessLLM's /delete with lora_adapters removes adapters only; the base stays.
    assert admin.post("/delete", json={"model": base, "lora_adapters": ["lora-b"]}).status_code == 200
    assert admin.get("/v1/models/lora-b").status_code == 404
    assert admin.get(f"/v1/models/{base}").status_code == 200


def test_deleting_the_base_deletes_its_adapters(
    admin: httpx.Client, tiny_model_dir: Path, adapters: dict[str, Path]
) -> None:
    body = {
        "model": "lora-short-lived",
        "model_source": str(tiny_model_dir),
        "engine_kwargs": {**ENGINE_KWARGS, "enable_lora": True, "max_lora_rank": 8},
        "adapters": [{"adapter": "lora-orphan", "source": str(adapters["lora-a"])}],
    }
    assert admin.post("/v1/admin/models", json=body).status_code == 201
    assert admin.get("/v1/models/lora-orphan").json()["parent"] == "lora-short-lived"
    assert admin.delete("/v1/admin/models/lora-short-lived").status_code == 200
    assert admin.get("/v1/models/lora-orphan").status_code == 404
    assert admin.get("/v1/admin/models/lora-short-lived").status_code == 404
