"""The simulator against the live system: one generated trace replayed through the app
(``sllm-ray replay``) and simulated for one node (``sllm-ray simulate``'s core, this
machine's calibration), side by side.

    python benchmarks/simulator_validation.py --duration 600 --models 8 --seed 5
    python benchmarks/simulator_validation.py --keep-alive-policy adaptive --bin-s 5

Prints the JSON line (``live``, ``simulated`` and the relative ``error`` of the cold-start
fraction and the p50 time to first token; the target is within 15 %), then a table.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

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
    model_body,
    server,
    verdict,
)

from sllm_ray.simulator.calibration import DEFAULT_PATH, load
from sllm_ray.simulator.core import Cluster, Simulation
from sllm_ray.simulator.policies import policies
from sllm_ray.workload import replay

TARGET_ERROR = 0.15
COMPARED = ("cold_start_fraction", "ttft_p50_s")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of trace")
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--requests-per-model-hour", type=float, default=60.0)
    parser.add_argument("--keep-alive", type=float, default=30.0)
    parser.add_argument("--keep-alive-policy", choices=("fixed", "adaptive"), default="fixed")
    parser.add_argument("--bin-s", type=float, default=60.0, help="the adaptive histogram's bin width")
    parser.add_argument("--calibration", type=Path, default=DEFAULT_PATH)


def _register(srv: Server, args: argparse.Namespace, models: list[str], model_dir: Path) -> None:
    for name in models:
        srv.register(
            keep_alive_body(
                name,
                model_dir,
                keep_alive_s=args.keep_alive,
                policy=args.keep_alive_policy,
                bin_s=args.bin_s,
                keep_asleep=True,
            )
        )


def main(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = ensure_model(args.model_dir)
    replay_args = generated_trace_args(args)
    trace = replay.load_trace(replay_args)
    log(f"trace: {len(trace.requests)} requests, {len(trace.models)} models, {trace.duration_s:g} s")
    with server(args) as srv:
        _register(srv, args, trace.models, model_dir)
        srv.wait_pools_settled()
        srv.wait_at_zero(trace.models)
        live = asyncio.run(replay.replay(replay_args, srv.url, srv.headers, {}))["overall"]
    look_back = model_body("m", model_dir, keep_alive_s=0)["autoscaling"]["look_back_period_s"]
    calibration = load(args.calibration).model_copy(update={"scale_down_lag_s": look_back})
    policy = policies(2)["sllm_ray_adaptive" if args.keep_alive_policy == "adaptive" else "sllm_ray"]
    cluster = Cluster(
        nodes=1, gpus_per_node=len(trace.models), keep_alive_s=args.keep_alive, adaptive_bin_s=args.bin_s
    )
    checkpoint = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())
    simulation = Simulation(policy, cluster, calibration, dict.fromkeys(trace.models, checkpoint))
    # The lengths the replay sent (its caps), not the trace's: prefill and decode time count.
    sent = [replay.as_sent(request, replay_args) for request in trace.requests]
    simulated = simulation.run(sent, trace.duration_s).to_json()
    error = {
        key: abs(simulated[key] - live[key]) / live[key] if live[key] and simulated[key] is not None else None
        for key in COMPARED
    }
    return {
        "machine": machine(),
        "trace": trace.summary(),
        "keep_alive": {
            "policy": args.keep_alive_policy,
            "keep_alive_s": args.keep_alive,
            "bin_s": args.bin_s,
        },
        "live": live,
        "simulated": simulated,
        "error": error,
        "within_target": all(e is not None and e <= TARGET_ERROR for e in error.values()),
    }


def table(result: dict[str, Any]) -> str:
    rows = [("", "live", "simulated", "error", f"within {TARGET_ERROR:.0%}")]
    for key in COMPARED:
        error = result["error"][key]
        rows.append(
            (
                key,
                fmt(result["live"][key]),
                fmt(result["simulated"][key]),
                fmt(error),
                verdict(None if error is None else error <= TARGET_ERROR),
            )
        )
    return format_table(rows)


if __name__ == "__main__":
    cli(__doc__, add_args, main, table)
