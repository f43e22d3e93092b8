"""Trace readers on small files written here, in each public format."""

from __future__ import annotations

from pathlib import Path

import pytest

from sllm_ray.workload.traces import MEDIAN_OUTPUT_TOKENS, Request, TraceError, read_burstgpt, read_trace


def test_azure_functions_counts_become_requests_spread_over_their_minute(tmp_path: Path) -> None:
    path = tmp_path / "invocations_per_function_md.anon.d01.csv"
    minutes = ",".join(str(i) for i in range(1, 1441))
    path.write_text(
        "HashOwner,HashApp,HashFunction,Trigger," + minutes + "\n"
        "o1,a1,f1,http,2,0,1" + ",0" * 1437 + "\n"
        "o1,a1,f2,timer,0,0,0" + ",0" * 1436 + ",3\n"
    )
    trace = read_trace(path)
    assert trace.duration_s == 86400.0
    assert [(r.model, r.at) for r in trace.requests] == [
        ("f1", 15.0),
        ("f1", 45.0),
        ("f1", 150.0),
        ("f2", 86350.0),
        ("f2", 86370.0),
        ("f2", 86390.0),
    ]
    assert {r.output_tokens for r in trace.requests} == {MEDIAN_OUTPUT_TOKENS}


def test_azure_llm_timestamps_with_seven_fraction_digits(tmp_path: Path) -> None:
    path = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:46.1000000,100,5\n"
    )
    trace = read_trace(path)
    assert trace.models == ["AzureLLMInferenceTrace_conv"]
    assert [(round(r.at, 4), r.prompt_tokens, r.output_tokens) for r in trace.requests] == [
        (0.0, 100, 5),
        (0.5806, 374, 44),
        (4.8952, 396, 109),
    ]


def test_burstgpt_rows_keep_their_model_and_lengths(tmp_path: Path) -> None:
    path = tmp_path / "BurstGPT_1.csv"
    path.write_text(
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,GPT-4,1087,0,1087,API log\n"
        "5.5,ChatGPT,1,2,3,Conversation log\n"
    )
    trace = read_trace(path)
    assert [(r.at, r.model, r.prompt_tokens, r.output_tokens) for r in trace.requests] == [
        (0.0, "ChatGPT", 472, 18),
        (0.5, "ChatGPT", 1, 2),
        (40.0, "GPT-4", 1087, 0),
    ]
    assert trace.limited(1.0).models == ["ChatGPT"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,c\n1,2,3\n", "none of Azure Functions"),
        ("Timestamp,Model,Request tokens,Response tokens\nsoon,m,1,2\n", "is not a number"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", "is not a timestamp"),
        ("", r"header \[\]"),
    ],
)
def test_files_in_no_known_format_or_with_bad_rows_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message):
        read_trace(path)


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "nowhere.csv")


def test_an_empty_file_read_in_a_named_format_is_a_trace_error(tmp_path: Path) -> None:
    path = tmp_path / "BurstGPT_1.csv"
    path.write_text("")
    with pytest.raises(TraceError, match="empty file"):
        read_burstgpt(path)


def test_a_replayed_request_is_simulated_with_the_lengths_sent() -> None:
    """The replay caps prompt and output (``--prompt-words``, ``--max-tokens``); a simulation
    of it takes the capped lengths (``benchmarks/simulator_validation.py``)."""
    import argparse

    from sllm_ray.workload.replay import as_sent

    caps = argparse.Namespace(prompt_words=32, max_tokens=8)
    assert as_sent(Request(1.0, "m", 1020, 129), caps) == Request(1.0, "m", 32, 8)
    assert as_sent(Request(1.0, "m", 0, 3), caps) == Request(1.0, "m", 1, 3)
