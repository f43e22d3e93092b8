"""The Serve-level suite's app: its name, address and model configs (the fake engine)."""

from __future__ import annotations

from pathlib import Path

from sllm_ray.testing.fake_engine import FAKE_ENGINE

APP = "fake"
PREFIX = "/fake"
BASE_URL = f"http://127.0.0.1:8000{PREFIX}"
FAKE = FAKE_ENGINE
FAST = {"keep_alive_s": 1, "look_back_period_s": 1}


def fake_model(name: str, model_dir: Path, **settings: object) -> dict:
    return {
        "model": name,
        "model_source": str(model_dir),
        "engine_kwargs": {"max_model_len": 512},
        "resources": {"num_cpus": 0.25},
        **settings,
    }
