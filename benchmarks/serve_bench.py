"""Serving benchmark: cold and warm time to first token, requests per second.

By default it launches the app itself (local Ray, the demo model, a short keep-alive so
the model is at zero replicas for the cold measurement); ``--url`` points it at an app
that is already running instead (``--ray-address`` lets it wait for zero replicas there).

    python benchmarks/serve_bench.py                      # launch and measure
    python benchmarks/serve_bench.py --url http://127.0.0.1:8000 --model tiny-llama \
        --ray-address auto                                # against `make run`

Prints one JSON line, then a short table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from sllm_ray import ray_compat

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray starts: its workers inherit it
ray_compat.set_serve_node_env()  # the same, for Serve's controller
REPO = Path(__file__).resolve().parents[1]
APP = "sllm"


def _launch(model: str, model_dir: Path, keep_alive_s: float) -> str:
    import ray
    from ray import serve

    from sllm_ray.builder import build_app
    from sllm_ray.tools.tiny_model import make_tiny_model

    make_tiny_model(model_dir)
    ray.init(
        address="local",
        num_cpus=4,
        object_store_memory=256 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,  # keep stdout for the JSON line and the table
    )
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    config = {
        "model_roots": [str(model_dir.parent)],
        "models": [
            {
                "model": model,
                "model_source": str(model_dir),
                "engine_kwargs": {
                    "max_model_len": 512,
                    "enforce_eager": True,
                    "kv_cache_memory_bytes": 1 << 26,
                },
                "autoscaling": {"keep_alive_s": keep_alive_s, "look_back_period_s": 11},
            }
        ],
    }
    serve.run(build_app(config), name=APP, route_prefix="/")
    return "http://127.0.0.1:8000"


def _running_replicas(model: str) -> int:
    from ray import serve

    from sllm_ray.names import model_app_name

    app = serve.status().applications.get(model_app_name(APP, model))
    return app.deployments[f"model:{model}"].replica_states.get("RUNNING", 0) if app else 0


async def _wait_for_zero(model: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _running_replicas(model) == 0:
            return True
        await asyncio.sleep(1)
    return False


async def _ttft(client: AsyncOpenAI, model: str, max_tokens: int) -> tuple[float, float]:
    """(time to first content token, total time) for one streamed chat request."""
    started = time.perf_counter()
    first: float | None = None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Benchmark prompt: describe the event loop."}],
        max_tokens=max_tokens,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    return (first if first is not None else total), total


async def _throughput(
    client: AsyncOpenAI, model: str, concurrency: int, requests: int, max_tokens: int
) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            await _ttft(client, model, max_tokens)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    client = AsyncOpenAI(
        base_url=f"{args.url}/v1", api_key=os.environ.get("OPENAI_API_KEY", "unused"), timeout=600
    )
    result: dict[str, Any] = {"benchmark": "serve_bench", "model": args.model, "max_tokens": args.max_tokens}

    cold: list[float] = []
    can_see_replicas = args.launch or args.ray_address
    for i in range(args.cold_runs if can_see_replicas else 0):
        if not await _wait_for_zero(args.model, args.cold_wait_s):
            print(f"cold run {i}: model did not reach zero replicas, skipped", file=sys.stderr)
            continue
        ttft, _ = await _ttft(client, args.model, args.max_tokens)
        cold.append(ttft)
        print(f"cold run {i}: ttft {ttft:.2f} s", file=sys.stderr)
    result["cold_ttft_s"] = cold
    result["cold_ttft_p50_s"] = statistics.median(cold) if cold else None

    await _ttft(client, args.model, args.max_tokens)  # make sure a replica is up
    warm = [(await _ttft(client, args.model, args.max_tokens))[0] for _ in range(args.warm_runs)]
    result["warm_ttft_p50_s"] = statistics.median(warm)
    result["warm_ttft_s"] = warm
    for concurrency in (1, 8):
        result[f"rps_c{concurrency}"] = await _throughput(
            client, args.model, concurrency, args.requests, args.max_tokens
        )
    return result


def _table(result: dict[str, Any]) -> str:
    def fmt(v: float | None, unit: str) -> str:
        return "n/a" if v is None else f"{v:.3f} {unit}"

    rows = [
        ("cold TTFT p50 (zero replicas)", fmt(result["cold_ttft_p50_s"], "s")),
        ("warm TTFT p50", fmt(result["warm_ttft_p50_s"], "s")),
        ("requests/s, 1 client", fmt(result["rps_c1"], "req/s")),
        ("requests/s, 8 clients", fmt(result["rps_c8"], "req/s")),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="base URL of a running app (default: launch one)")
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--ray-address", help="Ray address of the running app, to see its replicas")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "tiny-llama")
    parser.add_argument("--keep-alive-s", type=float, default=2.0, help="keep-alive of the launched app")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--cold-wait-s", type=float, default=120.0, help="how long to wait for zero replicas")
    parser.add_argument("--warm-runs", type=int, default=10)
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    args.launch = args.url is None
    if args.launch:
        args.url = _launch(args.model, args.model_dir, args.keep_alive_s)
    elif args.ray_address:
        import ray

        ray.init(address=args.ray_address)
    result = asyncio.run(run(args))
    print(json.dumps(result))
    print(_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
