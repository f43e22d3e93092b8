"""The `sllm-ray` CLI against the running app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app_under_test import BASE_URL


def sllm_ray(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SLLM_RAY_URL": BASE_URL}
    env.pop("SLLM_RAY_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sllm_ray.cli", *args], env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_lifecycle(serve_app: str, tiny_model_dir: Path) -> None:
    out = sllm_ray(
        "deploy",
        "--model",
        "cli-m",
        "--source",
        str(tiny_model_dir),
        "--engine-arg",
        "max_model_len=512",
        "--engine-arg",
        "enforce_eager=true",
        "--keep-alive",
        "30",
    )
    assert out.stdout.strip() == "registered cli-m"

    listed = sllm_ray("list").stdout.splitlines()
    header = ["MODEL", "STATE", "STATUS", "REPLICAS", "QUEUED", "MIN-MAX", "KEEP-ALIVE", "SOURCE"]
    assert listed[0].split() == header
    row = next(line.split() for line in listed if line.startswith("cli-m "))
    assert row[-3:] == ["0-1", "30s", str(tiny_model_dir)]

    record = json.loads(sllm_ray("--json", "list").stdout)
    (cli_m,) = [m for m in record["data"] if m["model"] == "cli-m"]
    assert cli_m["config"]["engine_kwargs"] == {"max_model_len": 512, "enforce_eager": True}

    assert (
        sllm_ray("update", "cli-m", "--max-replicas", "2").stdout.strip()
        == "updated cli-m (applied in place)"
    )
    status = json.loads(sllm_ray("--json", "status").stdout)
    (cli_m,) = [m for m in status["models"] if m["model"] == "cli-m"]
    assert cli_m["config"]["autoscaling"]["max_replicas"] == 2 and cli_m["queued"] == 0
    # The table form: the models, then each node's hosts and store.
    table = sllm_ray("status").stdout
    nodes = table.split("\n\n")[1].splitlines()
    header = ["NODE", "READY", "FREE", "SERVING", "ASLEEP", "DRAM", "IN", "DRAM", "ON", "DISK"]
    assert nodes[0].split() == header
    assert len(nodes) == 1 + len(status["nodes"])

    assert sllm_ray("delete", "cli-m").stdout.strip() == "deleted cli-m"
    again = sllm_ray("delete", "cli-m", check=False)
    assert again.returncode == 1 and "404" in again.stderr and "cli-m" in again.stderr


def test_cli_deploys_from_files(serve_app: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    ours = tmp_path / "model.yaml"
    ours.write_text(f"model: cli-file\nmodel_source: {tiny_model_dir}\nautoscaling:\n  keep_alive_s: 5\n")
    theirs = tmp_path / "sllm.json"
    theirs.write_text(
        json.dumps(
            {
                "model": "cli-sllm",
                "backend": "vllm",
                "num_gpus": 0,
                "backend_config": {"pretrained_model_name_or_path": str(tiny_model_dir)},
            }
        )
    )
    assert sllm_ray("deploy", "--file", str(ours)).stdout.strip() == "registered cli-file"
    assert sllm_ray("deploy", "-f", str(theirs)).stdout.strip() == "registered cli-sllm"
    models = {m["model"]: m for m in json.loads(sllm_ray("--json", "list").stdout)["data"]}
    assert models["cli-file"]["config"]["autoscaling"]["keep_alive_s"] == 5
    assert models["cli-sllm"]["config"]["resources"]["num_gpus"] == 0
    for name in ("cli-file", "cli-sllm"):
        sllm_ray("delete", name)

    bad = sllm_ray("deploy", "--model", "x", check=False)
    assert bad.returncode == 1 and "--source" in bad.stderr
    unreachable = sllm_ray("--url", "http://127.0.0.1:9", "list", check=False)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
