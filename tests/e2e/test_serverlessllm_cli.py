"""ServerlessLLM's own CLI (``sllm``, ``serverless-llm`` 0.8.0) against the app, unchanged:
``deploy`` with its default config, ``status``, LoRA adapters, ``delete``.

Its virtual environment is made by ``make sllm-cli`` (part of ``make test``): see
``sllm_cli_main.py``. Without it (a bare ``pytest`` run) these tests are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from app_under_test import BASE_URL, ENGINE_KWARGS

from sllm_ray.tools.tiny_lora import make_tiny_lora

ROOT = Path(__file__).resolve().parents[2]
SLLM_PYTHON = Path(os.environ.get("SLLM_CLI_PYTHON", ROOT / ".venv-sllm-cli" / "bin" / "python"))
pytestmark = pytest.mark.skipif(
    not SLLM_PYTHON.exists(), reason=f"no ServerlessLLM CLI environment at {SLLM_PYTHON} (make sllm-cli)"
)
MODEL = "sllm-cli-tiny"


def sllm(*args: str) -> str:
    proc = subprocess.run(
        [str(SLLM_PYTHON), str(Path(__file__).with_name("sllm_cli_main.py")), *args],
        env={**os.environ, "LLM_SERVER_URL": BASE_URL, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_their_cli_deploys_lists_adds_adapters_and_deletes(
    serve_app: str, admin: httpx.Client, client: openai.OpenAI, tiny_model_dir: Path, tmp_path: Path
) -> None:
    lora = make_tiny_lora(tiny_model_dir, tiny_model_dir.parent / "lora-cli", rank=8, seed=7)
    # Their default config (merged in by `sllm deploy`) with a local model, as a user's file.
    config = tmp_path / "config.json"
    backend = {"pretrained_model_name_or_path": str(tiny_model_dir), **ENGINE_KWARGS, "max_lora_rank": 8}
    config.write_text(json.dumps({"model": MODEL, "backend_config": backend}))
    deploy = ("deploy", "--config", str(config), "--num-gpus", "0", "--enable-lora")
    out = sllm(*deploy)
    assert f"Model '{MODEL}' deployed successfully" in out, out
    try:
        status = sllm("status")
        assert f"- {MODEL}\n" in status and "- tiny\n" in status, status
        assert client.completions.create(model=f"{MODEL}:vllm", prompt="Once", max_tokens=2).choices
        # `sllm deploy` of the deployed model with adapters adds them.
        out = sllm(*deploy, "--lora-adapters", f"cli-a={lora}")
        assert "deployed successfully" in out, out
        assert admin.get("/v1/models/cli-a").json()["parent"] == MODEL
        assert client.completions.create(model="cli-a", prompt="Once", max_tokens=2).choices
        out = sllm("delete", MODEL, "--lora-adapters", "cli-a")
        assert "sent successfully" in out and "- cli-a\n" not in sllm("status"), out
    finally:
        out = sllm("delete", MODEL)
    assert "sent successfully" in out and f"- {MODEL}\n" not in sllm("status")
