"""Registered models survive a restart: the registry brings them back."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
from app_under_test import APP_NAME, deploy, model_body

from sllm_ray.names import model_app_name


def test_models_come_back_after_a_restart(
    admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path, data_dir: Path
) -> None:
    from ray import serve

    body = model_body("survivor", tiny_model_dir, autoscaling={"keep_alive_s": 77})
    assert admin.post("/v1/admin/models", json=body).status_code == 201
    before = admin.get("/v1/admin/models/survivor").json()["config"]

    # Every application of ours goes (the app and each model's); only the registry file
    # is left, as after a restart of the Ray cluster.
    ours = [a for a in serve.status().applications if a == APP_NAME or a.startswith(f"{APP_NAME}-model-")]
    assert model_app_name(APP_NAME, "survivor") in ours
    for app in ours:
        serve.delete(app)
    assert not set(ours) & set(serve.status().applications)
    deploy(tiny_model_dir, data_dir)

    after = admin.get("/v1/admin/models/survivor")
    assert after.status_code == 200, after.text
    assert after.json()["config"] == before
    reply = client.chat.completions.create(
        model="survivor", messages=[{"role": "user", "content": "back?"}], max_tokens=2
    )
    assert reply.choices[0].message.content is not None
    assert admin.delete("/v1/admin/models/survivor").status_code == 200
