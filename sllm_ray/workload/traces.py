"""Traces: requests in time order, read from the public formats.

- Azure Functions 2019 invocation counts (``HashOwner,HashApp,HashFunction,Trigger`` then
  1,440 per-minute counts): one model per function, each minute's invocations spread
  evenly over the minute, token lengths the Azure LLM trace's medians (the format has none);
- Azure LLM inference 2023/2024 (``TIMESTAMP,ContextTokens,GeneratedTokens``): one model,
  named after the file;
- BurstGPT (``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``).

``read_trace`` tells them apart by their header.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Medians of the Azure LLM inference trace 2023 (conversation), for formats without lengths.
MEDIAN_PROMPT_TOKENS = 1020
MEDIAN_OUTPUT_TOKENS = 129

AZURE_FUNCTIONS_HEADER = ("HashOwner", "HashApp", "HashFunction", "Trigger")
AZURE_LLM_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_HEADER = ("Timestamp", "Model", "Request tokens", "Response tokens")


class TraceError(ValueError):
    """A trace file that is none of the known formats, or holds a row that does not parse."""


@dataclass(frozen=True, slots=True)
class Request:
    at: float  # seconds from the trace's start
    model: str
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    requests: list[Request]  # in time order
    duration_s: float

    @property
    def models(self) -> list[str]:
        """By first request."""
        return list(dict.fromkeys(r.model for r in self.requests))

    def summary(self) -> dict[str, float | int]:
        """Its size, as ``sllm-ray replay`` and the benchmarks report it."""
        return {"requests": len(self.requests), "models": len(self.models), "duration_s": self.duration_s}

    @staticmethod
    def of(requests: Iterable[Request], duration_s: float | None = None) -> Trace:
        ordered = sorted(requests, key=lambda r: r.at)
        end = ordered[-1].at if ordered else 0.0
        return Trace(ordered, max(end, duration_s or 0.0))

    def limited(self, duration_s: float) -> Trace:
        """The first ``duration_s`` seconds."""
        return Trace([r for r in self.requests if r.at < duration_s], min(self.duration_s, duration_s))


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header and the data rows."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc}") from exc
    if not rows:
        raise TraceError(f"{path}: empty file")
    return [h.strip() for h in rows[0]], rows[1:]


def _int(text: str, path: Path, line: int) -> int:
    try:
        return int(float(text))
    except ValueError:
        raise TraceError(f"{path}:{line}: {text!r} is not a number") from None


def read_azure_functions(path: Path) -> Trace:
    header, rows = _rows(path)
    minutes = len(header) - len(AZURE_FUNCTIONS_HEADER)
    requests = []
    for line, row in enumerate(rows, start=2):
        function = row[2]
        for minute, text in enumerate(row[len(AZURE_FUNCTIONS_HEADER) :]):
            count = _int(text, path, line)
            requests += [
                Request(
                    60.0 * (minute + (i + 0.5) / count), function, MEDIAN_PROMPT_TOKENS, MEDIAN_OUTPUT_TOKENS
                )
                for i in range(count)
            ]
    return Trace.of(requests, 60.0 * minutes)


def _timestamp(text: str, path: Path, line: int) -> float:
    # The 2023 trace writes 7 fractional digits, which datetime does not read.
    whole, dot, fraction = text.strip().partition(".")
    zone = ""
    for sign in ("+", "Z"):
        if sign in fraction:
            fraction, mark, rest = fraction.partition(sign)
            zone = mark + rest
    try:
        return datetime.fromisoformat(whole + (dot + fraction[:6] if dot else "") + zone).timestamp()
    except ValueError:
        raise TraceError(f"{path}:{line}: {text!r} is not a timestamp") from None


def read_azure_llm(path: Path) -> Trace:
    _, rows = _rows(path)
    stamped = [
        (_timestamp(row[0], path, line), _int(row[1], path, line), _int(row[2], path, line))
        for line, row in enumerate(rows, start=2)
        if row
    ]
    start = min((s for s, _, _ in stamped), default=0.0)
    return Trace.of(Request(s - start, path.stem, p, o) for s, p, o in stamped)


def read_burstgpt(path: Path) -> Trace:
    header, rows = _rows(path)
    at, model, prompt, output = (header.index(name) for name in BURSTGPT_HEADER)
    requests = []
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            seconds = float(row[at])
        except ValueError:
            raise TraceError(f"{path}:{line}: {row[at]!r} is not a number") from None
        requests.append(
            Request(seconds, row[model], _int(row[prompt], path, line), _int(row[output], path, line))
        )
    start = min((r.at for r in requests), default=0.0)
    return Trace.of(Request(r.at - start, r.model, r.prompt_tokens, r.output_tokens) for r in requests)


def read_trace(path: str | Path) -> Trace:
    """A trace file in any of the known formats."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            header = [h.strip() for h in next(csv.reader(handle), [])]
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc}") from exc
    if tuple(header[:4]) == AZURE_FUNCTIONS_HEADER:
        return read_azure_functions(path)
    if tuple(header[:3]) == AZURE_LLM_HEADER:
        return read_azure_llm(path)
    if all(name in header for name in BURSTGPT_HEADER):
        return read_burstgpt(path)
    raise TraceError(f"{path}: header {header[:6]} is none of Azure Functions, Azure LLM or BurstGPT")
