"""Adaptive against fixed keep-alive, live: one generated trace replayed through the app
twice at once, onto two copies of its models, ``fixed-*`` (``keep_alive: fixed``) and
``adaptive-*`` (``keep_alive: adaptive``, the same ``keep_alive_s`` as its fallback and
budget). Both see the same arrivals at the same moments and share the machine's noise.

Time is compressed by ``--speed``: the trace's keep-alive and histogram bin are given in
trace seconds and divided by it, as the replay divides the arrival times.

    python benchmarks/keep_alive.py                       # 2 h of trace, 8 models, at 20x: 6 min
    python benchmarks/keep_alive.py --duration 3600 --models 4 --speed 10

Target (issue 13, live): adaptive has at most half the fixed keep-alive's cold starts
(cold-start fraction) at no more replica-seconds and memory GB-seconds. Prints one JSON
line (``fixed``, ``adaptive``: ``sllm-ray replay``'s overall summaries; ``ratio``) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import httpx
from common import (
    Server,
    cli,
    ensure_model,
    fmt,
    format_table,
    generated_trace_args,
    keep_alive_body,
    log,
    machine,
    ratio,
    server,
    verdict,
)

from sllm_ray.workload import replay
from sllm_ray.workload.traces import Trace

POLICIES = ("fixed", "adaptive")
COMPARED = ("cold_start_fraction", "replica_seconds", "memory_gb_seconds", "ttft_p50_s", "ttft_p99_s")
# adaptive over fixed, at most (cold starts: half; the resources it holds: no more).
TARGETS = {"cold_start_fraction": 0.5, "replica_seconds": 1.0, "memory_gb_seconds": 1.0}


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=7200.0, help="seconds of trace")
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    # Above the generator's 6: enough idle times per model for a histogram within 2 hours.
    parser.add_argument("--requests-per-model-hour", type=float, default=12.0)
    parser.add_argument("--speed", type=float, default=20.0, help="time compression")
    parser.add_argument("--keep-alive", type=float, default=300.0, help="fixed keep-alive, trace seconds")
    parser.add_argument("--bin-s", type=float, default=60.0, help="adaptive histogram bin, trace seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per policy")


def _register(srv: Server, args: argparse.Namespace, models: list[str], model_dir: Path) -> None:
    for policy in POLICIES:
        for model in models:
            srv.register(
                keep_alive_body(
                    f"{policy}-{model}",
                    model_dir,
                    keep_alive_s=args.keep_alive / args.speed,
                    policy=policy,
                    bin_s=args.bin_s / args.speed,
                )
            )


async def _both(srv: Server, replay_args: argparse.Namespace, trace: Trace) -> dict[str, Any]:
    """Both policies' replays of ``trace``, started together; each one's overall summary."""
    limits = httpx.Limits(max_connections=2 * replay_args.concurrency + 4)
    timeout = httpx.Timeout(replay_args.timeout, connect=10.0)
    client = httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=timeout, limits=limits)
    async with client as http:
        drivers = {
            policy: replay.Replay(http, replay_args, {m: f"{policy}-{m}" for m in trace.models})
            for policy in POLICIES
        }
        outcomes = await asyncio.gather(*(driver.run(trace) for driver in drivers.values()))
    return {
        policy: replay.summary(done, drivers[policy].usage, {f"{policy}-{m}" for m in trace.models})
        for policy, done in zip(POLICIES, outcomes, strict=True)
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = ensure_model(args.model_dir)
    replay_args = generated_trace_args(
        args, "--speed", str(args.speed), "--concurrency", str(args.concurrency)
    )
    trace = replay.load_trace(replay_args)
    log(
        f"trace: {len(trace.requests)} requests, {len(trace.models)} models, {trace.duration_s:g} s "
        f"at {args.speed:g}x: {trace.duration_s / args.speed:.0f} s live, each policy"
    )
    with server(args) as srv:
        _register(srv, args, trace.models, model_dir)
        names = [f"{p}-{m}" for p in POLICIES for m in trace.models]
        srv.wait_pools_settled()
        srv.wait_at_zero(names)
        result = asyncio.run(_both(srv, replay_args, trace))
    ratios = {key: ratio(result["adaptive"][key], result["fixed"][key]) for key in COMPARED}
    met = {key: ratios[key] is not None and ratios[key] <= bound for key, bound in TARGETS.items()}
    return {
        "machine": machine(),
        "trace": trace.summary(),
        "speed": args.speed,
        "keep_alive_s": args.keep_alive,
        "bin_s": args.bin_s,
        **result,
        "ratio": ratios,
        "target": {"adaptive_over_fixed_at_most": TARGETS, "met": met},
    }


def table(result: dict[str, Any]) -> str:
    rows = [("", "fixed", "adaptive", "adaptive / fixed", "target")]
    for key in COMPARED:
        bound = TARGETS.get(key)
        rows.append(
            (
                key,
                fmt(result["fixed"][key]),
                fmt(result["adaptive"][key]),
                fmt(result["ratio"][key]),
                "-" if bound is None else f"<= {bound:g}: {verdict(result['target']['met'][key])}",
            )
        )
    for key in ("requests", "errors"):
        rows.append((key, str(result["fixed"][key]), str(result["adaptive"][key]), "", ""))
    return format_table(rows)


if __name__ == "__main__":
    cli(__doc__, add_args, main, table)
