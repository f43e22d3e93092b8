"""The CLI's model table lists a registry record that fails to load, with its reason."""

from __future__ import annotations

from sllm_ray.cli import _models_table


def test_an_invalid_record_is_a_row_and_a_line_with_its_reason() -> None:
    good = {
        "model": "good",
        "state": "active",
        "deployment_status": "HEALTHY",
        "replicas": {"RUNNING": 1},
        "config": {
            "model_source": "models/a",
            "autoscaling": {"min_replicas": 0, "max_replicas": 2, "keep_alive_s": 30.0},
        },
    }
    bad = {
        "model": "bad",
        "state": "invalid",
        "invalid_reason": "autoscaling.keep_alive_s: Input should be a valid number",
        "config": {"model_source": "models/b", "autoscaling": {"keep_alive_s": None}},
    }
    table = _models_table([good, bad]).splitlines()
    assert table[1].split()[:2] == ["good", "active"]
    assert table[2].split() == ["bad", "invalid", "-", "-", "-", "-", "-", "models/b"]
    assert (
        table[3] == "bad: stored config is invalid: autoscaling.keep_alive_s: Input should be a valid number"
    )
