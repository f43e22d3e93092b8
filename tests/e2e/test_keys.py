"""API keys, on a second sllm_ray application (mounted at /keyed) that has keys configured."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from app_under_test import BASE_URL
from support import app_folders

KEYED_APP = "sllm-keyed"
USER_KEY = "user-secret-key"
ADMIN_KEY = "admin-secret-key"


@pytest.fixture(scope="module")
def keyed(serve_app: str, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[str]:
    from ray import serve

    from sllm_ray.builder import build_app

    folder = tmp_path_factory.mktemp("keyed")
    keys = folder / "keys.yaml"
    admin_digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    keys.write_text(f"keys:\n  - key: {USER_KEY}\n  - sha256: {admin_digest}\n    role: admin\n")
    config = {
        **app_folders(folder, tiny_model_dir),
        "api_keys_file": str(keys),
    }
    serve.run(build_app(config), name=KEYED_APP, route_prefix="/keyed")
    try:
        yield f"{BASE_URL}/keyed"
    finally:
        serve.delete(KEYED_APP)


def _get(url: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(url, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/health", None, 200),
        ("/v1/models", None, 401),
        ("/v1/models", "wrong", 401),
        ("/v1/models", USER_KEY, 200),
        ("/v1/models", ADMIN_KEY, 200),
        ("/v1/admin/models", None, 401),
        ("/v1/admin/models", USER_KEY, 403),
        ("/v1/admin/models", ADMIN_KEY, 200),
        ("/status", USER_KEY, 403),
        ("/status", ADMIN_KEY, 200),
    ],
)
def test_routes_need_the_right_key(keyed: str, path: str, key: str | None, status: int) -> None:
    resp = _get(keyed + path, key)
    assert resp.status_code == status, resp.text
    if status >= 400:
        error = resp.json()["error"]
        assert error["code"] == status and set(error) == {"message", "type", "param", "code"}
        assert USER_KEY not in resp.text and ADMIN_KEY not in resp.text


def test_openai_client_and_cli_with_keys(keyed: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed}/v1", api_key="wrong", max_retries=0).models.list()
    assert openai.OpenAI(base_url=f"{keyed}/v1", api_key=USER_KEY).models.list().data == []

    def cli(key: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SLLM_RAY_URL": keyed, "SLLM_RAY_API_KEY": key}
        return subprocess.run(
            [sys.executable, "-m", "sllm_ray.cli", "list"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    denied = cli(USER_KEY)
    assert denied.returncode == 1 and "403" in denied.stderr
    allowed = cli(ADMIN_KEY)
    assert allowed.returncode == 0 and allowed.stdout.startswith("MODEL"), allowed.stderr


def test_the_other_app_is_untouched(keyed: str, admin: httpx.Client) -> None:
    # Two sllm_ray apps in one cluster: each manages only its own model applications.
    names = {m["model"] for m in admin.get("/v1/admin/models").json()["data"]}
    assert {"tiny", "tiny-ephemeral", "unplaceable"} <= names
