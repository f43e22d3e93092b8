"""A request's log line: an adapter's request is accounted under the adapter, naming its base."""

from __future__ import annotations

import logging

import pytest

from sllm_ray.api.accounting import RequestLog


def test_an_adapters_request_names_the_adapter_and_its_base(caplog: pytest.LogCaptureFixture) -> None:
    log = RequestLog("lora-a", "completions")
    log.base = "tiny-lora"
    with caplog.at_level(logging.INFO, logger="sllm_ray.requests"):
        log.whole({"usage": {"completion_tokens": 3}})
        log.close(200)
    (record,) = caplog.records
    assert "model=lora-a base=tiny-lora status=200 tokens=3" in record.getMessage()
    assert (record.model, record.base) == ("lora-a", "tiny-lora")  # type: ignore[attr-defined]


def test_a_models_request_names_no_base(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sllm_ray.requests"):
        RequestLog("tiny", "chat").close(404)
    assert "model=tiny status=404" in caplog.records[0].getMessage()
