"""Log lines as JSON objects, with the fields a request line carries."""

from __future__ import annotations

import json
import logging

import pytest

from sllm_ray.log_setup import JsonFormatter, ProgressLog


def test_json_lines_carry_the_message_and_the_extra_fields() -> None:
    record = logging.LogRecord(
        "sllm_ray.requests", logging.INFO, __file__, 1, "chat model=%s", ("tiny",), None
    )
    record.model, record.status, record.ttft_s = "tiny", 200, 0.012
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "chat model=tiny" and line["level"] == "INFO"
    assert (line["logger"], line["model"], line["status"], line["ttft_s"]) == (
        "sllm_ray.requests",
        "tiny",
        200,
        0.012,
    )
    assert "args" not in line and "msg" not in line


def test_progress_is_logged_at_most_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test_progress")
    progress = ProgressLog(logger, "converting m", total_bytes=4 * 10**9, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="test_progress"):
        progress.advance(10**9)
        progress.advance(2 * 10**9)
    assert [r.getMessage() for r in caplog.records] == [
        "converting m: 25% (1.0 of 4.0 GB)",
        "converting m: 75% (3.0 of 4.0 GB)",
    ]
    quiet = ProgressLog(logger, "copying", total_bytes=10, every_s=3600)
    with caplog.at_level(logging.INFO, logger="test_progress"):
        quiet.advance(5)
    assert len(caplog.records) == 2
