"""What the manager hands Serve for warm-ups and adaptive keep-alive (``control/rhythm.py``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sllm_ray.config import ModelConfig
from sllm_ray.control.rhythm import Rhythm, WarmHold, WarmRequest


def model(**autoscaling: object) -> ModelConfig:
    return ModelConfig.model_validate(
        {"model": "m", "model_source": "/models/m", "autoscaling": {"max_replicas": 2, **autoscaling}}
    )


def test_a_hold_raises_min_replicas_until_it_ends() -> None:
    rhythm, config = Rhythm(), model(min_replicas=0)
    rhythm.hold("m", WarmHold(5, until=100.0, reason="requested"))
    held = rhythm.serve_config(config, now=50.0)
    assert held.autoscaling.min_replicas == 2  # within max_replicas
    assert held.autoscaling.keep_alive_s == config.autoscaling.keep_alive_s
    assert rhythm.serve_config(config, now=100.0) == config
    assert rhythm.held("m", 50.0) is None  # gone once over


def test_an_adaptive_periodic_model_goes_at_once_and_is_prewarmed_once_per_idle_period() -> None:
    rhythm, config = Rhythm(), model(keep_alive="adaptive", keep_alive_s=300)
    assert rhythm.serve_config(config, 0.0).autoscaling.keep_alive_s == 300  # no idle times yet
    assert rhythm.serve_config(config, 0.0).keep_asleep
    for i in range(12):
        rhythm.observe("m", 600.0 * i, bin_s=60.0)
    last = 600.0 * 11
    assert rhythm.serve_config(config, last).autoscaling.keep_alive_s == 0.0
    assert not rhythm.serve_config(config, last).keep_asleep  # the next start is planned
    assert rhythm.prewarm_due(config, last + 500) is None
    hold = rhythm.prewarm_due(config, last + 545)
    assert hold == WarmHold(1, last + 540 + (726 - 540), "prewarm")
    assert rhythm.prewarm_due(config, last + 550) is None  # this idle period is pre-warmed
    assert rhythm.prewarm_due(model(keep_alive_s=30), last + 545) is None  # fixed: never


def test_a_warm_request_is_validated() -> None:
    assert WarmRequest.model_validate({}) == WarmRequest(replicas=1, for_s=300.0)
    with pytest.raises(ValidationError):
        WarmRequest.model_validate({"replicas": 0})
    with pytest.raises(ValidationError):
        WarmRequest.model_validate({"for_s": 1, "extra": True})


def test_a_prewarm_is_due_its_window_after_the_last_arrival() -> None:
    """What the manager's timer waits for: on time, not at its node sync's next look."""
    rhythm, config = Rhythm(), model(keep_alive="adaptive", keep_alive_s=300)
    assert rhythm.prewarm_at(config) is None  # no arrivals yet
    for i in range(12):
        rhythm.observe("m", 600.0 * i, bin_s=60.0)
    last = 600.0 * 11
    assert rhythm.prewarm_at(config) == last + 540  # the 5th percentile, less 10 %
    assert rhythm.prewarm_due(config, last + 539) is None
    assert rhythm.prewarm_due(config, last + 540) is not None
    assert rhythm.prewarm_at(model(keep_alive_s=30)) is None  # fixed: never
