"""Burst: N models at zero replicas, one streaming request each at the same moment.

The demo model registered N times (``burst-0`` ...) with the demo's engine arguments
(``configs/serve.yaml``), ``resources.num_cpus`` 0.25, ``keep_asleep: false`` (every start
builds an engine) and a 1 s keep-alive, all at zero replicas. For each N of ``--sizes``
and each of ``--rounds``: wait until every model is at zero and the engine-host pools are
settled (a host ready, none being prepared), then one streaming completion to each of the
first N models at once; time to first token of each, over HTTP, and where each replica's
start went (``common.replica_marks``, seconds after the burst was sent). Then the same for plain
Serve deployments of the same models (``common.PlainServer``: the replica imports vLLM and
builds its engine when it starts), for the sizes of ``--baseline-sizes`` (1, 2, 4 by
default; ``--no-baseline`` skips them). A failed request is counted and printed. Per N:
p50, p99 and max time to first token.

Target (issue 11): for N = 4, p50 at most 2x and max at most 3x the N = 1 p50 of the same
run; no request fails.

    python benchmarks/burst.py                                   # N = 1, 2, 4, 8, one round
    python benchmarks/burst.py --sizes 1,2 --rounds 1 --no-baseline
    python benchmarks/burst.py --url http://127.0.0.1:8000 --ray-address auto   # a running app

Prints one JSON line (also to ``--out``) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import common

NUM_CPUS = 0.25


def burst(
    server: common.Server, requests: list[tuple[str, dict[str, Any]]], timeout_s: float, phases: bool
) -> list[dict]:
    """The requests at once; with ``phases``, each one's replica timeline read as soon as
    it is answered (the model scales back to zero a second later)."""
    t0 = time.time()

    async def one(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        result = await common.timed_stream(client, path, body)
        if phases and result["error"] is None:
            record = await asyncio.to_thread(common.replica_record, body["model"])
            result["phases"] = common.relative(common.replica_marks(record), t0)
        return result

    async def run() -> list[dict[str, Any]]:
        async with common.async_client(server, timeout_s) as client:
            return list(await asyncio.gather(*(one(client, path, body) for path, body in requests)))

    return asyncio.run(run())


def report(side: str, n: int, results: list[dict[str, Any]]) -> None:
    ttfts = ", ".join(common.fmt(r["ttft_s"], " s") for r in results)
    common.log(f"{side} N={n}: time to first token {ttfts}")
    for r in results:
        if r["error"]:
            common.log(f"  FAILED {side} {r['model']} after {r['total_s']} s: {r['error']}")


def summarize(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    out = {}
    for n, results in runs.items():
        ttfts = [r["ttft_s"] for r in results if r["error"] is None]
        out[str(n)] = {
            **common.spread(ttfts),
            "failures": sum(1 for r in results if r["error"]),
            "errors": [f"{r['model']}: {r['error']}" for r in results if r["error"]],
            "requests": results,
        }
    return out


def target(sllm: dict[str, Any]) -> dict[str, Any]:
    one, four = sllm.get("1"), sllm.get("4")
    failures = sum(s["failures"] for s in sllm.values())
    base = one["p50_s"] if one else None
    p50_ratio = common.ratio(four["p50_s"], base) if four else None
    max_ratio = common.ratio(four["max_s"], base) if four else None
    checks = [
        None if p50_ratio is None else p50_ratio <= 2.0,
        None if max_ratio is None else max_ratio <= 3.0,
        failures == 0,
    ]
    return {
        "n1_p50_s": base,
        "n4_p50_over_n1_p50": p50_ratio,
        "n4_max_over_n1_p50": max_ratio,
        "failures": failures,
        "met": None if None in checks else all(checks),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = common.ensure_model(args.model_dir)
    names = [f"burst-{i}" for i in range(max(args.sizes))]
    sllm_runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.sizes}
    base_sizes = [] if args.no_baseline else [n for n in args.sizes if n in args.baseline_sizes]
    base_runs: dict[int, list[dict[str, Any]]] = {n: [] for n in base_sizes}
    engine_kwargs = common.demo_engine_kwargs()
    with common.server(args) as server:
        if base_sizes and not server.has_ray:
            common.log("no baseline: it needs Ray in this process (--ray-address with --url)")
            base_sizes, base_runs = [], {}
        for name in names:
            body = common.model_body(
                name, model_dir, keep_alive_s=args.keep_alive_s, num_cpus=args.num_cpus_per_model
            )
            server.register(body)
        server.wait_dram()
        common.start_once(server, names[0], args.max_tokens)
        base_names = names[: max(base_sizes, default=0)]
        common.deploy_baselines(base_names, model_dir, engine_kwargs, args.num_cpus_per_model)
        try:
            for round_ in range(args.rounds):
                for n in args.sizes:
                    bodies = [common.completion_body(name, args.max_tokens) for name in names[:n]]
                    server.wait_at_zero(names)
                    # The last baseline replicas hold vLLM processes that compete for the
                    # cores until Serve stops them: a burst beside them measures those.
                    common.wait_baselines_at_zero(base_names)
                    waited = server.wait_pools_settled()
                    requests = [("/v1/completions", b) for b in bodies]
                    results = burst(server, requests, args.timeout_s, phases=server.has_ray)
                    for r in results:
                        r.update(round=round_, pool_settle_wait_s=waited)
                    report("sllm_ray", n, results)
                    sllm_runs[n] += results
                    if n not in base_runs:
                        continue
                    server.wait_at_zero(names)
                    common.wait_baselines_at_zero(base_names)
                    server.wait_pools_settled()
                    paths = [f"{common.baseline_route(name)}/v1/completions" for name in names[:n]]
                    results = burst(
                        server, list(zip(paths, bodies, strict=True)), args.timeout_s, phases=False
                    )
                    for r in results:
                        r["round"] = round_
                    report("baseline", n, results)
                    base_runs[n] += results
        finally:
            common.delete_baselines(base_names)
    sllm = summarize(sllm_runs)
    return {
        "benchmark": "burst",
        "machine": common.machine(),
        "model": str(model_dir),
        "engine_kwargs": engine_kwargs,
        "num_cpus_per_model": args.num_cpus_per_model,
        "sizes": args.sizes,
        "rounds": args.rounds,
        "sllm_ray": sllm,
        "baseline": summarize(base_runs) if base_runs else None,
        "target": target(sllm),
        "failed_registrations": server.failed_registrations,
    }


def table(result: dict[str, Any]) -> str:
    base = result["baseline"]
    head = ("N", "sllm_ray p50", "p99", "max", "failed")
    rows = [(*head, *(("baseline p50", "p99", "max", "failed", "p50 speedup") if base else ()))]
    for n in result["sizes"]:
        s = result["sllm_ray"][str(n)]
        cells = (str(n), *(common.fmt(s[k], " s") for k in ("p50_s", "p99_s", "max_s")), str(s["failures"]))
        if base and str(n) in base:
            b = base[str(n)]
            speedup = common.ratio(b["p50_s"], s["p50_s"])
            cells += (
                *(common.fmt(b[k], " s") for k in ("p50_s", "p99_s", "max_s")),
                str(b["failures"]),
                common.fmt(speedup, "x"),
            )
        elif base:
            cells += ("-",) * 5
        rows.append(cells)
    t = result["target"]
    lines = [
        common.format_table(rows),
        f"target (N=4 against N=1 p50 {common.fmt(t['n1_p50_s'], ' s')}): "
        f"p50 {common.fmt(t['n4_p50_over_n1_p50'], 'x')} (<= 2x), "
        f"max {common.fmt(t['n4_max_over_n1_p50'], 'x')} (<= 3x), "
        f"failed requests {t['failures']} (0): {common.verdict(t['met'])}",
    ]
    for side in ("sllm_ray", "baseline"):
        for n, s in (result[side] or {}).items():
            lines += [f"failed: {side} N={n} {e}" for e in s["errors"]]
    return "\n".join(lines)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8], help="e.g. 1,2,4,8"
    )
    parser.add_argument("--rounds", type=int, default=1, help="bursts of each size")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain Serve deployments")
    parser.add_argument(
        "--baseline-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4],
        help="the sizes also run on the baseline (default 1,2,4: each baseline replica holds about "
        "2 GB in three processes, and N = 8 takes minutes on 2 cores)",
    )
    parser.add_argument(
        "--num-cpus-per-model", type=float, default=NUM_CPUS, help="resources.num_cpus of each model"
    )
    parser.add_argument("--keep-alive-s", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=600, help="client timeout of one request")


if __name__ == "__main__":
    common.cli(__doc__, add_args, main, table)
