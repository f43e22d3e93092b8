"""Log lines as JSON objects, with the fields a request line carries."""

from __future__ import annotations

import json
import logging

from sllm_ray.log_setup import JsonFormatter


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
