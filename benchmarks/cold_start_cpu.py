"""CPU of a cold start: every process of the machine, counted around one cold start.

On a small node a cold start's speed, a burst's and the warm models' throughput beside it
all move with the CPU a cold start takes from the others, and that CPU is spread over
Serve's controller, the new replica, the engine host, the ingress, the node's pool, the
GCS... The demo model is registered with the demo's engine arguments, ``keep_asleep:
false`` (every start builds an engine) and a keep-alive of the window. For each of
``--starts``: wait until it is at zero and the node is quiet, count every process's
CPU-seconds over an idle window of ``--window-s`` (the baseline: the idle loops of the
same processes), then over the same length from one streaming request: the cold start,
its first token and the rest of the reply, and the replica worker the node's pool starts
1.5 s after the claim, in place of the one the replica took (the model goes back to zero
only after the window). A process's cost of the cold start is the difference. Processes
are grouped by role, read off their command lines (Ray names its workers after their
actors); the benchmark's own client is not the app's.

It reads the processes of this machine: the app must run here (the default starts one in
this process; ``--url`` only for an app on this machine).

    python benchmarks/cold_start_cpu.py                    # 4 starts
    python benchmarks/cold_start_cpu.py --starts 8 --out cold_start_cpu.json

Prints one JSON line (also to ``--out``) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import common
import psutil

MODEL = "cpu-0"
# Command-line fragments -> role, first match wins (Ray's workers carry their actor's
# name: ``ray::ServeReplica:<app>:<deployment>``).
ROLES = (
    ("ServeController", "Serve's controller"),
    ("ProxyActor", "Serve's proxy"),
    (":model-manager", "model manager"),
    (":openai-ingress", "ingress"),
    ("ServeReplica:", "model replica"),
    ("HostPool", "engine host pool"),
    ("CheckpointStore", "checkpoint store"),
    ("sllm_ray.engine.launcher", "engine launcher"),
    ("gcs_server", "GCS"),
    ("raylet", "raylet"),
    # The one the node's pool starts in place of the worker the new replica took.
    ("ray::IDLE", "replica workers started"),
    ("dashboard", "Ray dashboard"),
    ("cold_start_cpu", "this benchmark"),
)
CLIENT = "this benchmark"  # the request's client: not the app's cost


def role(process: psutil.Process) -> str:
    """What the process is; an engine host is a child of its node's launcher."""
    command = " ".join(process.cmdline())
    for fragment, name in ROLES:
        if fragment in command:
            if name == "engine launcher" and "launcher" in " ".join(process.parent().cmdline()):
                return "engine hosts"
            return name
    return "other"


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU-seconds so far, its reaped children's included), of every
    process that can be read."""
    out = {}
    for process in psutil.process_iter():
        try:
            times = process.cpu_times()
            # With its exited children's, once it reaped them: the short-lived processes
            # an engine build runs (lscpu) count for their parent.
            used = times.user + times.system + times.children_user + times.children_system
            out[process.pid] = (role(process), used)
        except (psutil.Error, AttributeError):  # gone, unreadable, or its parent gone
            continue
    return out


def by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> Counter[str]:
    """CPU-seconds each role used between the two counts (a process started in between:
    all of its own)."""
    used: Counter[str] = Counter()
    for pid, (name, cpu) in after.items():
        used[name] += cpu - before.get(pid, (name, 0.0))[1]
    return used


def cold_start(server: common.Server, window_s: float, max_tokens: int) -> dict[str, Any]:
    idle_from = cpu_by_process()
    time.sleep(window_s)
    idle = by_role(idle_from, cpu_by_process())
    cold_from = cpu_by_process()
    sent = time.monotonic()

    async def run() -> dict[str, Any]:
        async with common.async_client(server, 60, connections=1) as client:
            body = common.completion_body(MODEL, max_tokens)
            return await common.timed_stream(client, "/v1/completions", body)

    result = asyncio.run(run())
    time.sleep(max(0.0, window_s - (time.monotonic() - sent)))
    cold = by_role(cold_from, cpu_by_process())
    roles = {name: round(cold[name] - idle.get(name, 0.0), 3) for name in cold}
    return {
        "ttft_s": result["ttft_s"],
        "error": result["error"],
        "cpu_s": round(sum(v for name, v in roles.items() if name != CLIENT), 3),
        "idle_cpu_s": round(sum(idle.values()), 3),
        "roles": roles,
    }


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "min": None, "max": None}
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), 3),
        "p50": round(common.quantile(values, 0.5), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = common.ensure_model(args.model_dir)
    starts = []
    with common.server(args) as server:
        # Kept alive through the window: its scale to zero is not counted.
        body = common.model_body(MODEL, model_dir, keep_alive_s=args.window_s, num_cpus=0.25)
        server.register(body)
        server.wait_dram()
        common.start_once(server, MODEL, args.max_tokens)
        for n in range(args.starts):
            server.wait_at_zero([MODEL])
            server.wait_pools_settled()
            start = cold_start(server, args.window_s, args.max_tokens)
            common.log(f"cold start {n}: time to first token {start['ttft_s']} s, {start['cpu_s']} CPU-s")
            starts.append(start)
    names = sorted({name for s in starts for name in s["roles"]})
    per_role = {name: stats([s["roles"].get(name, 0.0) for s in starts]) for name in names}
    return {
        "benchmark": "cold_start_cpu",
        "machine": common.machine(),
        "model": str(model_dir),
        "engine_kwargs": common.demo_engine_kwargs(),
        "window_s": args.window_s,
        "starts": starts,
        "cpu_s": stats([s["cpu_s"] for s in starts]),
        "ttft_s": stats([s["ttft_s"] for s in starts if s["error"] is None]),
        "roles": dict(sorted(per_role.items(), key=lambda item: -item[1]["mean"])),
        "failures": sum(s["error"] is not None for s in starts),
    }


def table(result: dict[str, Any]) -> str:
    rows = [("process", "CPU-s per cold start (mean)", "min to max")]

    def row(name: str, used: dict[str, Any]) -> tuple[str, str, str]:
        return name, common.fmt(used["mean"]), f"{common.fmt(used['min'])} to {common.fmt(used['max'])}"

    # The roles under 5 ms are within the idle windows' noise.
    rows += [row(name, used) for name, used in result["roles"].items() if abs(used["mean"]) >= 0.005]
    rows.append(row(f"the app (all but {CLIENT})", result["cpu_s"]))
    ttft = result["ttft_s"]
    return "\n".join(
        [
            common.format_table(rows),
            f"{len(result['starts'])} cold starts, time to first token p50 {common.fmt(ttft['p50'], ' s')}; "
            f"each against an idle window of {result['window_s']:g} s just before it; "
            f"failed requests {result['failures']}",
        ]
    )


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument(
        "--window-s",
        type=float,
        default=5.0,
        help="seconds counted from the request, and idle before it (5: the model manager's "
        "periodic reads of the node services fall once in each)",
    )
    parser.add_argument("--max-tokens", type=int, default=8)


if __name__ == "__main__":
    common.cli(__doc__, add_args, main, table)
