"""Cold start: time to first token of a model at zero replicas, sllm_ray against the plain way.

In one run on one machine, for the same locally made model:

- sllm_ray: the app from ``sllm_ray.builder`` (engine hosts prepared ahead of demand, the
  checkpoint store's DRAM tier, Serve told about demand every 0.1 s), called through the
  ingress's Python handle;
- baseline, the plain way (what Ray Serve LLM does): a Serve deployment whose replica
  imports vLLM and builds its engine from safetensors when it starts, with Serve's
  default autoscaling metrics (``common.PlainServer``), called through its own handle
  (one hop fewer).

For each, ``--runs`` cold starts (the first right after deployment, the rest after the
model went back to zero; sllm_ray's with ``keep_asleep: false``, so each builds an
engine), and for sllm_ray as many hot starts (a second copy of the model whose engine
sleeps in its host while the model is at zero, and is woken instead of built), with the
phases of each from the replicas' and engine hosts' own records and Serve's controller
log (wall-clock times relative to sending the request): demand seen (Serve's autoscaler
decides to scale up from zero), replica scheduled (its constructor runs), engine host
claimed, engine build started, weights loaded (or engine woken), engine ready; and first
token. Then warm time to first token for both, each at its model deployment, and
sllm_ray's also through its ingress, the requests to the three interleaved. Prints one
JSON line (also to ``--out``) and a table. ``python benchmarks/cold_start.py --runs 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    REPO,
    emit,
    plain_app,
    relative,
    replica_count,
    replica_marks,
    replica_record,
    wait_cpu_quiet,
    wait_for,
)

MODEL = "tiny"
HOT_MODEL = "tiny-hot"  # the same model, its engine kept asleep when it goes back to zero
# --engine: the demo's engine arguments (configs/serve.yaml), or those of the plain Ray
# Serve LLM baseline the issue tracker compares with (bf16, 256 tokens, a 1 GiB KV cache).
ENGINES = {
    "demo": {"max_model_len": 512, "enforce_eager": True, "kv_cache_memory_bytes": 64 * 1024**2},
    "serve-llm": {
        "dtype": "bfloat16",
        "max_model_len": 256,
        "enforce_eager": True,
        "kv_cache_memory_bytes": 1024**3,
    },
}
BODY = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8, "stream": True}


# What Serve's controller logs at each step of a scale from zero, for a deployment.
CONTROLLER_EVENTS = {
    "demand_seen": "Upscaling Deployment(name='{deployment}', app='{app}') from 0 to",
    "replica_added": "Adding 1 replica to Deployment(name='{deployment}', app='{app}')",
    # Its constructor and first health check done: the controller routes to it from now on.
    "replica_running": "deployment='{deployment}', app='{app}') started successfully",
}


def controller_events(app: str, deployment: str, after: float) -> dict[str, float | None]:
    """When Serve's controller logged each of ``CONTROLLER_EVENTS`` for the deployment,
    first after ``after``: read from its log (polling Serve from here would load the
    controller on a small machine and slow what is measured)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    found: dict[str, float | None] = dict.fromkeys(CONTROLLER_EVENTS)
    lines = [line for path in logs.glob("controller_*.log") for line in path.read_text().splitlines()]
    for event, pattern in CONTROLLER_EVENTS.items():
        needle = pattern.format(app=app, deployment=deployment)
        for line in lines:
            if needle not in line:
                continue
            stamp = " ".join(line.split()[1:3])  # "2026-11-23 09:47:06,574"
            day, ms = stamp.split(",")
            at = time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
            if at >= after - 0.001:
                found[event] = at
                break
    return found


def first_token(stream: Any) -> float:
    """Seconds until the stream yields its first generated text."""
    started = time.time()
    for item in stream:
        text = json.dumps(item) if isinstance(item, dict) else str(item)
        if '"text"' in text and "[DONE]" not in text:
            first = time.time() - started
            for _ in stream:  # drain
                pass
            return first
    raise RuntimeError("stream ended without a token")


def _sllm_marks(record: dict[str, Any], events: dict[str, float | None]) -> dict[str, float | None]:
    """Serve's steps and the replica's, in the order they happen."""
    marks = {"demand_seen": events["demand_seen"], "replica_added": events["replica_added"]}
    replica = replica_marks(record)
    routed = replica.pop("request_routed")
    return {**marks, **replica, "replica_running": events["replica_running"], "request_routed": routed}


def cold_run_sllm(handle: Any, model_app: str, pool_ready: Any) -> dict[str, Any]:
    wait_for(lambda: replica_count(model_app, f"model:{MODEL}") == 0, 120, "sllm_ray to scale to zero")
    wait_for(pool_ready, 120, "a prepared engine host")
    wait_cpu_quiet()  # the pool replacing what the last start took
    t0 = time.time()
    ttft = first_token(handle.options(stream=True).completions.remote(BODY))
    record = replica_record(MODEL, "sllm")
    host = record["host"]
    marks = _sllm_marks(record, controller_events(model_app, f"model:{MODEL}", t0))
    del marks["engine_woken"]
    build = {k: round(v, 3) for k, v in host["phases"].items()}
    return {
        "ttft_s": round(ttft, 3),
        "tier": host["load"]["tier"] if host["load"] else "source",
        "phases": relative(marks, t0),
        "engine_build_s": build,
    }


def hot_run_sllm(handle: Any, model_app: str, sleeping: Any) -> dict[str, Any]:
    """A start from zero replicas with the model's engine asleep on the node."""
    deployment = f"model:{HOT_MODEL}"
    wait_for(lambda: replica_count(model_app, deployment) == 0, 120, "the hot model to scale to zero")
    wait_for(sleeping, 60, "the hot model's engine asleep")
    wait_cpu_quiet()
    t0 = time.time()
    ttft = first_token(handle.options(stream=True).completions.remote({**BODY, "model": HOT_MODEL}))
    marks = _sllm_marks(replica_record(HOT_MODEL, "sllm"), controller_events(model_app, deployment, t0))
    for built in ("engine_build_started", "weights_loaded"):
        del marks[built]
    return {"ttft_s": round(ttft, 3), "tier": "hot", "phases": relative(marks, t0)}


def cold_run_baseline(handle: Any) -> dict[str, Any]:
    wait_for(lambda: replica_count("baseline", "PlainServer") == 0, 300, "the baseline to scale to zero")
    wait_cpu_quiet()
    t0 = time.time()
    ttft = first_token(handle.options(stream=True).generate.remote(BODY))
    record = handle.record.remote().result()
    serve_events = controller_events("baseline", "PlainServer", t0)
    marks = {
        "demand_seen": serve_events["demand_seen"],
        "replica_added": serve_events["replica_added"],
        "replica_scheduled": record["replica_started_at"],
        "engine_ready": record["engine_ready_at"],
        "replica_running": serve_events["replica_running"],
    }
    return {"ttft_s": round(ttft, 3), "tier": "source", "phases": relative(marks, t0)}


def warm(streams: dict[str, Any], n: int) -> dict[str, list[float]]:
    """Warm time to first token of each stream maker, their requests interleaved so that
    the machine's noise falls on all alike. The first request of each (which may find no
    replica) is not counted; interleaving keeps every model up."""
    for make_stream in streams.values():
        first_token(make_stream())
    out: dict[str, list[float]] = {name: [] for name in streams}
    for _ in range(n):
        for name, make_stream in streams.items():
            out[name].append(round(first_token(make_stream()), 4))
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ttfts = [r["ttft_s"] for r in runs]
    phases = {
        k: statistics.median(r["phases"][k] for r in runs if r["phases"][k] is not None)
        for k in runs[0]["phases"]
        if any(r["phases"][k] is not None for r in runs)
    }
    return {
        "first_ttft_s": ttfts[0],
        "repeated_ttft_p50_s": statistics.median(ttfts[1:]) if len(ttfts) > 1 else None,
        "ttft_p50_s": statistics.median(ttfts),
        "phases_p50_s": {k: round(v, 3) for k, v in phases.items()},
        "runs": runs,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    from sllm_ray.builder import build_app
    from sllm_ray.names import model_app_name
    from sllm_ray.tools.tiny_model import make_tiny_model

    model_dir = args.model_dir
    if not (model_dir / "config.json").exists():
        make_tiny_model(model_dir)
    data_dir = Path(tempfile.mkdtemp(prefix="sllm-cold-start-"))
    ray.init(
        address="local",
        num_cpus=8,
        object_store_memory=256 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    keep_alive = {"keep_alive_s": 1, "look_back_period_s": 2}
    config = {
        "data_dir": str(data_dir),
        "model_roots": [str(model_dir.parent)],
        "models": [
            {
                "model": name,
                "model_source": str(model_dir),
                "engine_kwargs": ENGINES[args.engine],
                "autoscaling": keep_alive,
                "keep_asleep": name == HOT_MODEL,
            }
            for name in (MODEL, HOT_MODEL)
        ],
    }
    sllm = serve.run(build_app(config), name="sllm", route_prefix="/")
    manager = serve.get_deployment_handle("model-manager", app_name="sllm")
    model_app = model_app_name("sllm", MODEL)
    hot_app = model_app_name("sllm", HOT_MODEL)

    def nodes() -> list[dict[str, Any]]:
        return manager.nodes.remote().result()

    def pool_ready() -> bool:
        return all(n["pool_ready"] for n in nodes())

    def in_dram() -> bool:
        return all(n["store"] and n["store"]["dram"]["checkpoints"] for n in nodes())

    def hot_asleep() -> bool:
        return any(s["model"] == HOT_MODEL for n in nodes() for s in n["engine_hosts"]["sleeping"])

    wait_for(lambda: pool_ready() and in_dram(), 180, "the engine host pool and the DRAM tier")

    baseline = serve.run(
        plain_app(MODEL, model_dir, ENGINES[args.engine]), name="baseline", route_prefix="/baseline"
    )

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "model": str(model_dir),
        "engine": args.engine,
        "engine_kwargs": ENGINES[args.engine],
    }
    sllm_runs = [cold_run_sllm(sllm, model_app, pool_ready) for _ in range(args.runs)]
    print(f"sllm_ray cold runs: {[r['ttft_s'] for r in sllm_runs]}", file=sys.stderr)
    wait_for(pool_ready, 120, "a prepared engine host")
    first_token(sllm.options(stream=True).completions.remote({**BODY, "model": HOT_MODEL}))  # builds it
    hot_runs = [hot_run_sllm(sllm, hot_app, hot_asleep) for _ in range(args.runs)]
    print(f"sllm_ray hot runs: {[r['ttft_s'] for r in hot_runs]}", file=sys.stderr)
    base_runs = [cold_run_baseline(baseline) for _ in range(args.baseline_runs)]
    print(f"baseline cold runs: {[r['ttft_s'] for r in base_runs]}", file=sys.stderr)
    result["sllm_ray"] = summary(sllm_runs)
    result["sllm_ray_hot"] = summary(hot_runs)
    result["baseline"] = summary(base_runs)
    # Warm: each system's model deployment called directly (sllm_ray's replica forwards
    # to its engine host: one hop more), and sllm_ray through its ingress as users call it.
    from sllm_ray.protocol import Endpoint

    model_handle = serve.get_deployment_handle(f"model:{MODEL}", app_name=model_app)
    warm_ttfts = warm(
        {
            "sllm_ray": lambda: model_handle.options(stream=True).generate.remote(Endpoint.COMPLETIONS, BODY),
            "baseline": lambda: baseline.options(stream=True).generate.remote(BODY),
            "sllm_ray_via_ingress": lambda: sllm.options(stream=True).completions.remote(BODY),
        },
        args.warm,
    )
    result["sllm_ray"]["warm_ttft_s"] = warm_ttfts["sllm_ray"]
    result["sllm_ray"]["warm_ttft_via_ingress_s"] = warm_ttfts["sllm_ray_via_ingress"]
    result["baseline"]["warm_ttft_s"] = warm_ttfts["baseline"]
    for side in ("sllm_ray", "baseline"):
        result[side]["warm_ttft_p50_s"] = statistics.median(result[side]["warm_ttft_s"])
    result["sllm_ray"]["warm_ttft_via_ingress_p50_s"] = statistics.median(
        result["sllm_ray"]["warm_ttft_via_ingress_s"]
    )
    result["speedup_p50"] = round(result["baseline"]["ttft_p50_s"] / result["sllm_ray"]["ttft_p50_s"], 1)
    serve.shutdown()
    ray.shutdown()
    return result


def table(result: dict[str, Any]) -> str:
    sides = ("sllm_ray", "sllm_ray_hot", "baseline")
    rows = [("", "sllm_ray cold", "sllm_ray hot", "baseline")]
    for key in ("first_ttft_s", "repeated_ttft_p50_s", "ttft_p50_s"):
        rows.append((key, *(str(result[side][key]) for side in sides)))
    rows.append(
        (
            "warm_ttft_p50_s",
            str(result["sllm_ray"]["warm_ttft_p50_s"]),
            "-",
            str(result["baseline"]["warm_ttft_p50_s"]),
        )
    )
    rows.append(
        ("warm_ttft_via_ingress_p50_s", str(result["sllm_ray"]["warm_ttft_via_ingress_p50_s"]), "-", "-")
    )
    phases = (
        "demand_seen",
        "replica_added",
        "worker_started",
        "replica_scheduled",
        "host_claimed",
        "checkpoint_located",
        "engine_build_started",
        "weights_loaded",
        "engine_woken",
        "engine_ready",
        "replica_running",
        "request_routed",
    )
    for phase in phases:
        rows.append(
            (f"p50 {phase} at (s)", *(str(result[side]["phases_p50_s"].get(phase, "-")) for side in sides))
        )
    rows.append(("speedup (cold p50)", f"{result['speedup_p50']}x", "", ""))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) for r in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per system (at least 2)")
    parser.add_argument(
        "--baseline-runs", type=int, default=5, help="cold starts of the baseline (at least 2; each ~1 min)"
    )
    parser.add_argument("--warm", type=int, default=50, help="warm requests per system")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "tiny-llama")
    parser.add_argument("--engine", choices=sorted(ENGINES), default="demo", help="engine arguments")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    args = parser.parse_args()
    outcome = main(args)
    emit(outcome, table(outcome), args.out)
