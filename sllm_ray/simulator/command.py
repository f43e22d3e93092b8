"""``sllm-ray simulate``: the policies side by side on one trace, as JSON, a table and plots.

sllm-ray simulate --nodes 64 --gpus-per-node 8 --models 200 --duration 86400 --seed 7
sllm-ray simulate --trace AzureFunctionsInvocationTrace.csv --nodes 16 --plots plots/
sllm-ray simulate --calibrate --cold-start-json docs/benchmarks/cold_start.json \
    --replay-json docs/benchmarks/replay_calibration.json
"""

from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllm_ray.simulator import calibration as calibration_file
from sllm_ray.simulator.policies import policies
from sllm_ray.tables import text_table
from sllm_ray.workload.traces import Trace, read_trace

if TYPE_CHECKING:
    from sllm_ray.simulator.core import Cluster, Result

# Checkpoint sizes of the simulated models (bf16: 1.5B, 3B, 8B and 14B parameters), by a
# hash of the model's name so a trace's models keep theirs from run to run.
MODEL_BYTES = (3 * 10**9, 6 * 10**9, 16 * 10**9, 28 * 10**9)
SLEEPERS_PER_NODE = 2  # AppConfig.engine_sleepers_per_node's default
TABLE_KEYS = ("ttft_p50_s", "ttft_p99_s", "cold_start_fraction", "gpu_seconds", "dram_gb_seconds", "wall_s")


class SimulateError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--models", type=int, default=100, help="models of a generated trace")
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of traffic")
    parser.add_argument("--trace", help="Azure Functions, Azure LLM or BurstGPT CSV (default: generated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policies", default=",".join(policies(SLEEPERS_PER_NODE)), help="comma-separated")
    parser.add_argument("--keep-alive", type=float, default=300.0, help="fixed keep-alive seconds")
    parser.add_argument("--sleepers-per-node", type=int, default=SLEEPERS_PER_NODE)
    parser.add_argument("--dram-tier-gb", type=float, default=256.0, help="each node's DRAM tier")
    parser.add_argument("--model-bytes", type=int, help="every model's checkpoint size (default: mixed)")
    parser.add_argument("--calibration", default=str(calibration_file.DEFAULT_PATH))
    parser.add_argument("--plots", help="folder for PNG plots (needs matplotlib)")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="measure this machine's store bandwidths, take --cold-start-json's phases: into --calibration",
    )
    parser.add_argument("--cold-start-json", help="a benchmarks/cold_start.py result, for --calibrate")
    parser.add_argument(
        "--replay-json",
        help="an `sllm-ray replay --json` result, for --calibrate: warm TTFT as its warm requests saw it",
    )
    parser.add_argument("--dram-dir", default="/dev/shm", help="tmpfs folder for --calibrate's probe")


def model_sizes(models: list[str], fixed: int | None) -> dict[str, int]:
    return {m: fixed or MODEL_BYTES[zlib.crc32(m.encode()) % len(MODEL_BYTES)] for m in models}


def load_trace(args: argparse.Namespace) -> Trace:
    if args.trace:
        return read_trace(args.trace).limited(args.duration)
    from sllm_ray.workload.generator import GeneratorConfig, generate  # numpy: only when needed

    return generate(GeneratorConfig(models=args.models, duration_s=args.duration, seed=args.seed))


def simulate(
    trace: Trace,
    cluster: Cluster,
    cal: calibration_file.Calibration,
    names: list[str],
    sleepers: int,
    size: int | None,
) -> dict[str, Result]:
    from sllm_ray.simulator.core import Simulation  # numpy and the store's torch: only here

    known = policies(sleepers)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SimulateError(f"unknown policies {unknown}; known: {sorted(known)}")
    sizes = model_sizes(trace.models, size)
    return {n: Simulation(known[n], cluster, cal, sizes).run(trace.requests, trace.duration_s) for n in names}


def table(report: dict[str, dict[str, Any]]) -> str:
    rows = [["POLICY", *(k.upper() for k in TABLE_KEYS)]]
    rows += [[name, *(str(r[k]) for k in TABLE_KEYS)] for name, r in report.items()]
    return text_table(rows)


def plot(results: dict[str, Result], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, result in results.items():
        ttfts = np.sort(result.ttfts)
        ax.plot(ttfts, np.arange(1, ttfts.size + 1) / max(1, ttfts.size), label=name)
    ax.set(xscale="log", xlabel="time to first token (s)", ylabel="fraction of requests", title="TTFT CDF")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "simulate_ttft_cdf.png", dpi=120)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    report = {n: r.to_json() for n, r in results.items()}
    for ax, key in zip(axes, ("cold_start_fraction", "gpu_seconds", "dram_gb_seconds"), strict=True):
        ax.bar(list(report), [report[n][key] or 0 for n in report])
        ax.set_title(key)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(folder / "simulate_costs.png", dpi=120)
    plt.close("all")
    return [str(folder / "simulate_ttft_cdf.png"), str(folder / "simulate_costs.png")]


def _last_json(path: Path) -> dict[str, Any]:
    """The JSON object on a command's last line (``replay --json`` prints its progress first)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise SimulateError(f"{path} is empty")
    return json.loads(lines[-1])


def run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The command's JSON result and its table."""
    if args.calibrate:
        cold_start = json.loads(Path(args.cold_start_json).read_text()) if args.cold_start_json else None
        replayed = _last_json(Path(args.replay_json)) if args.replay_json else None
        cal = calibration_file.calibrate(
            calibration_file.load(args.calibration), cold_start, Path(args.dram_dir), replayed
        )
        calibration_file.save(cal, args.calibration)
        return cal.model_dump(), f"wrote {args.calibration}"
    from sllm_ray.simulator.core import Cluster

    trace = load_trace(args)
    cluster = Cluster(args.nodes, args.gpus_per_node, args.keep_alive, int(args.dram_tier_gb * 2**30))
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    results = simulate(
        trace,
        cluster,
        calibration_file.load(args.calibration),
        names,
        args.sleepers_per_node,
        args.model_bytes,
    )
    report = {name: result.to_json() for name, result in results.items()}
    out: dict[str, Any] = {
        "trace": {
            "requests": len(trace.requests),
            "models": len(trace.models),
            "duration_s": trace.duration_s,
        },
        "cluster": {
            "nodes": args.nodes,
            "gpus_per_node": args.gpus_per_node,
            "keep_alive_s": args.keep_alive,
        },
        "policies": report,
    }
    if args.plots:
        out["plots"] = plot(results, Path(args.plots))
    return out, table(report)
