"""CPU of one engine build in a forked engine host, against the same build without the fork.

What a cold start's engine build costs, without Ray or Serve around it: a parent process
prepared as a node's launcher prepares (``OpenAIEngine.prepare_process``, then
``gc.freeze()``) forks ``--builds`` children one after the other; each builds the demo
model's engine in process, as an engine host does, and reports the CPU-seconds, wall
seconds and minor page faults of its build, then exits. The **baseline**, in the same run:
the same build in the prepared parent itself, after its children (no fork, so no
copy-on-write of the parent's pages). On 2 cores the builds run alone, one at a time.

A burst of cold starts runs several builds at once, and the warm traffic beside a cold
start loses what its build takes (``burst.py``, ``warm_throughput.py``): this is the
number those two move with, measured without their noise.

    python benchmarks/engine_build.py                # 6 forked builds and the baseline
    python benchmarks/engine_build.py --builds 3 --out engine_build.json

Prints one JSON line (also to ``--out``) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import common


def build_once(model_dir: Path) -> dict[str, Any]:
    """Build the demo engine in this process, as an engine host does; its costs."""
    from sllm_ray.engine.openai_engine import OpenAIEngine

    engine = OpenAIEngine("build", str(model_dir), common.demo_engine_kwargs(), in_process=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(engine.start())
    after = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "cpu_s": round(time.process_time() - cpu, 4),
        "wall_s": round(time.perf_counter() - wall, 4),
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "phases_s": {k: round(v, 4) for k, v in engine.phases.items()},
    }
    engine.shutdown()
    return result


def forked_build(model_dir: Path) -> dict[str, Any]:
    """One build in a child forked from this (prepared) process."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build, report on the pipe, exit without cleanup
        os.close(read)
        try:
            payload = build_once(model_dir)
        except Exception as exc:  # reported to the parent, which fails the run
            payload = {"error": repr(exc)}
        os.write(write, json.dumps(payload).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    result = json.loads(text) if text else {"error": "the child exited without a report"}
    if "error" in result:
        raise RuntimeError(f"a forked build failed: {result['error']}")
    return result


def summary(builds: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [b["cpu_s"] for b in builds]
    return {
        "n": len(builds),
        "cpu_s_mean": round(statistics.mean(cpu), 4),
        "cpu_s_p50": round(statistics.median(cpu), 4),
        "cpu_s_min": min(cpu),
        "cpu_s_max": max(cpu),
        "wall_s_p50": round(statistics.median(b["wall_s"] for b in builds), 4),
        "minor_faults_p50": int(statistics.median(b["minor_faults"] for b in builds)),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    from sllm_ray.engine.host_pool import host_env

    os.environ.update(host_env())  # what a launcher adds, before torch is imported
    model_dir = common.ensure_model(args.model_dir)
    from sllm_ray.engine.openai_engine import OpenAIEngine

    started = time.process_time()
    OpenAIEngine.prepare_process()
    gc.collect()
    gc.freeze()
    common.log(f"prepared in {time.process_time() - started:.1f} CPU-s")
    forked = []
    for i in range(args.builds):
        forked.append(forked_build(model_dir))
        common.log(f"forked build {i}: {forked[-1]['cpu_s']} CPU-s, {forked[-1]['wall_s']} s")
    baseline = build_once(model_dir)
    common.log(f"build in the prepared parent: {baseline['cpu_s']} CPU-s, {baseline['wall_s']} s")
    forked_summary = summary(forked)
    return {
        "benchmark": "engine_build",
        "machine": common.machine(),
        "model": str(model_dir),
        "engine_kwargs": common.demo_engine_kwargs(),
        "forked": {**forked_summary, "builds": forked},
        "baseline_in_parent": baseline,
        "fork_over_parent": common.ratio(forked_summary["cpu_s_p50"], baseline["cpu_s"]),
    }


def table(result: dict[str, Any]) -> str:
    f, b = result["forked"], result["baseline_in_parent"]
    rows = [
        ("build", "CPU-s (p50)", "min to max", "wall p50", "minor faults"),
        (
            f"forked host (x{f['n']})",
            common.fmt(f["cpu_s_p50"]),
            f"{f['cpu_s_min']} to {f['cpu_s_max']}",
            common.fmt(f["wall_s_p50"], " s"),
            str(f["minor_faults_p50"]),
        ),
        (
            "the prepared parent (baseline)",
            common.fmt(b["cpu_s"]),
            "",
            common.fmt(b["wall_s"], " s"),
            str(b["minor_faults"]),
        ),
    ]
    return "\n".join(
        [
            common.format_table(rows),
            f"a forked build's CPU: {common.fmt(result['fork_over_parent'], 'x')} the parent's",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--builds", type=int, default=6)
    parser.add_argument("--model-dir", type=Path, default=common.DEFAULT_MODEL_DIR)
    parser.add_argument("--out", type=Path)
    parsed = parser.parse_args()
    result = main(parsed)
    common.emit(result, table(result), parsed.out)
