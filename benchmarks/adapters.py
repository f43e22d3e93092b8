"""LoRA adapters on one warm base replica, against the base's own requests in the same run.

The demo model (its engine arguments and resources from ``configs/serve.yaml``) registered
as ``lora-base`` with vLLM's ``enable_lora`` (``max_lora_rank`` 8, ``max_loras`` 8), kept
warm, and random rank-8 adapters on it (``sllm_ray.tools.tiny_lora``, in ``--adapter-dir``).
Three measurements, each of streaming completions of ``--max-tokens``:

- **warm TTFT**: ``--requests`` requests to the base and to a loaded adapter, alternating,
  one at a time; time to first token p50 of each (target: adapter at most 1.3x the base);
- **first adapter request**: the first request for each of ``--fresh`` adapters not loaded
  yet, on the warm replica, over the warm adapter TTFT p50 (target: at most +0.3 s, median);
- **throughput**: ``--clients`` clients for ``--window-s`` each, first all on the base, then
  each on its own adapter (8 adapters on the one replica, loaded); requests per second
  (target: adapters at least 70% of base-only).

    python benchmarks/adapters.py
    python benchmarks/adapters.py --requests 10 --window-s 10

Prints one JSON line (also to ``--out``) and a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from sllm_ray.tools.tiny_lora import make_tiny_lora

BASE = "lora-base"
LORA_ARGS = {"enable_lora": True, "max_lora_rank": 8, "max_loras": 8, "max_cpu_loras": 16}
TTFT_TARGET = 1.3
FIRST_TARGET_S = 0.3
THROUGHPUT_TARGET = 0.7


def _p50(results: list[dict[str, Any]]) -> float | None:
    values = [r["ttft_s"] for r in results if r["error"] is None and r["ttft_s"] is not None]
    return round(statistics.median(values), 4) if values else None


async def warm_ttft(server: common.Server, adapter: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {BASE: [], adapter: []}
    async with common.async_client(server, 600, connections=2) as client:
        for _ in range(args.requests):
            for model in (BASE, adapter):
                body = common.completion_body(model, args.max_tokens)
                out[model].append(await common.timed_stream(client, "/v1/completions", body))
    base, lora = _p50(out[BASE]), _p50(out[adapter])
    failed = sum(1 for rs in out.values() for r in rs if r["error"])
    return {
        "base_ttft_p50_s": base,
        "adapter_ttft_p50_s": lora,
        "ratio": common.ratio(lora, base),
        "failed": failed,
    }


async def first_requests(
    server: common.Server, adapters: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    async with common.async_client(server, 600, connections=1) as client:
        return [
            await common.timed_stream(client, "/v1/completions", common.completion_body(a, args.max_tokens))
            for a in adapters
        ]


async def throughput(server: common.Server, models: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """``len(models)`` clients, client i on ``models[i]``, each request after the other."""
    done: list[dict[str, Any]] = []
    stop = time.perf_counter() + args.window_s

    async def loop(client: Any, model: str) -> None:
        body = common.completion_body(model, args.throughput_tokens)
        while time.perf_counter() < stop:
            done.append(await common.timed_stream(client, "/v1/completions", body))

    started = time.perf_counter()
    async with common.async_client(server, 600, connections=len(models) + 2) as client:
        await asyncio.gather(*(loop(client, m) for m in models))
    seconds = time.perf_counter() - started
    ok = [r for r in done if r["error"] is None]
    return {
        "seconds": round(seconds, 2),
        "requests": len(ok),
        "failed": len(done) - len(ok),
        "rps": round(len(ok) / seconds, 2),
        "ttft_p50_s": _p50(ok),
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = common.ensure_model(args.model_dir)
    adapter_dir = (args.adapter_dir or Path(tempfile.mkdtemp(prefix="sllm-bench-lora-"))).resolve()
    if not args.url:  # the app started here takes adapters from there too
        roots = [str(model_dir.parent), str(adapter_dir)]
        args.app_arg.append(f"model_roots={json.dumps(roots)}")
    count = args.clients + 1 + args.fresh  # one per client, one for the warm TTFT, fresh ones
    folders = [make_tiny_lora(model_dir, adapter_dir / f"lora-{i}", rank=8, seed=i) for i in range(count)]
    names = [f.name for f in folders]
    clients, warm, fresh = names[: args.clients], names[args.clients], names[args.clients + 1 :]
    with common.server(args) as server:
        body = common.model_body(BASE, model_dir, keep_alive_s=600, look_back_period_s=15)
        body["engine_kwargs"] = {**body["engine_kwargs"], **LORA_ARGS}
        body["adapters"] = [{"adapter": n, "source": str(f)} for n, f in zip(names, folders, strict=True)]
        server.register(body)
        server.wait_dram()
        common.start_once(server, BASE)
        for adapter in (warm, *clients):  # loaded: only `fresh` are not yet
            common.start_once(server, adapter)
        server.wait_pools_settled()
        ttft = asyncio.run(warm_ttft(server, warm, args))
        common.log(f"warm ttft: {ttft}")
        firsts = asyncio.run(first_requests(server, fresh, args))
        over = [
            round(r["ttft_s"] - ttft["adapter_ttft_p50_s"], 4)
            for r in firsts
            if r["error"] is None and ttft["adapter_ttft_p50_s"] is not None
        ]
        common.log(f"first requests over warm: {over}")
        base_only = asyncio.run(throughput(server, [BASE] * args.clients, args))
        common.log(f"base only: {base_only}")
        mixed = asyncio.run(throughput(server, clients, args))
        common.log(f"{args.clients} adapters: {mixed}")
    first_over = round(statistics.median(over), 4) if over else None
    share = common.ratio(mixed["rps"], base_only["rps"])
    failures = ttft["failed"] + sum(1 for r in firsts if r["error"]) + base_only["failed"] + mixed["failed"]
    targets = {
        "adapter_ttft_over_base_at_most": TTFT_TARGET,
        "first_request_over_warm_at_most_s": FIRST_TARGET_S,
        "adapters_throughput_of_base_at_least": THROUGHPUT_TARGET,
        "met": {
            "ttft": ttft["ratio"] is not None and ttft["ratio"] <= TTFT_TARGET,
            "first_request": first_over is not None and first_over <= FIRST_TARGET_S,
            "throughput": share is not None and share >= THROUGHPUT_TARGET,
        },
    }
    return {
        "benchmark": "adapters",
        "machine": common.machine(),
        "model": str(model_dir),
        "engine_kwargs": LORA_ARGS,
        "max_tokens": args.max_tokens,
        "warm_ttft": ttft,
        "first_request": {
            "ttft_s": [r["ttft_s"] for r in firsts],
            "over_warm_s": over,
            "median_over_s": first_over,
        },
        "throughput": {"clients": args.clients, "base_only": base_only, "adapters": mixed, "share": share},
        "failures": failures,
        "target": targets,
    }


def table(result: dict[str, Any]) -> str:
    t, met = result["target"], result["target"]["met"]
    ttft, first, tput = result["warm_ttft"], result["first_request"], result["throughput"]
    rows = [
        ("measure", "base", "adapters", "result", "target"),
        (
            "warm TTFT p50",
            common.fmt(ttft["base_ttft_p50_s"], " s"),
            common.fmt(ttft["adapter_ttft_p50_s"], " s"),
            common.fmt(ttft["ratio"], "x"),
            f"<= {t['adapter_ttft_over_base_at_most']}x: {common.verdict(met['ttft'])}",
        ),
        (
            "first request of an adapter",
            "-",
            ", ".join(common.fmt(v, " s") for v in first["ttft_s"]),
            f"+{common.fmt(first['median_over_s'], ' s')} (median)",
            f"<= +{t['first_request_over_warm_at_most_s']} s: {common.verdict(met['first_request'])}",
        ),
        (
            f"requests/s, {tput['clients']} clients",
            common.fmt(tput["base_only"]["rps"]),
            common.fmt(tput["adapters"]["rps"]),
            common.fmt(tput["share"], "x"),
            f">= {t['adapters_throughput_of_base_at_least']}x: {common.verdict(met['throughput'])}",
        ),
    ]
    return "\n".join([common.format_table(rows), f"failed requests: {result['failures']}"])


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=8, help="clients, and adapters, of the throughput run")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens per request of the TTFT runs")
    parser.add_argument(
        "--throughput-tokens", type=int, default=32, help="tokens per request of the throughput runs"
    )
    parser.add_argument(
        "--requests", type=int, default=20, help="warm TTFT requests to each of base and adapter"
    )
    parser.add_argument("--fresh", type=int, default=5, help="adapters whose first request is timed")
    parser.add_argument("--window-s", type=float, default=15.0, help="seconds of each throughput run")
    parser.add_argument(
        "--adapter-dir", type=Path, help="where the adapters are written (with --url: inside its model_roots)"
    )


if __name__ == "__main__":
    common.cli(__doc__, add_args, main, table)
