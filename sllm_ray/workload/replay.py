"""``sllm-ray replay``: a trace's requests against a running app, and what they met.

    sllm-ray --url http://127.0.0.1:8000 replay --generate --models 4 --duration 120 --seed 3 \\
        --source models/tiny-llama --json

Each request is sent at its time in the trace (divided by ``--speed``) as a streamed
completion, at most ``--concurrency`` at once (a request beyond waits, and its times count
from when it was due). The trace's models are registered from ``--source`` (or mapped
onto the registered models, in turn). While it runs, the app's ``/status`` is read each
second: a request is **warm** when its model had a running replica when it was sent,
**hot** when its engine was asleep on a node, **cold** otherwise; replica-seconds and
memory-seconds (the unique memory of the model's engine hosts, serving or asleep) add up
from the same reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from sllm_ray.tables import text_table
from sllm_ray.workload.generator import GeneratorConfig, generate
from sllm_ray.workload.traces import Request, Trace, read_trace

STATUS_POLL_S = 1.0
PROGRESS_S = 0.5
KINDS = ("cold", "hot", "warm")


def as_sent(request: Request, args: argparse.Namespace) -> Request:
    """The request as the replay sends it: prompt (one word a token) and output capped by
    ``--prompt-words`` and ``--max-tokens``, so a simulation of a replay sees its lengths."""
    return replace(
        request,
        prompt_tokens=max(1, min(request.prompt_tokens, args.prompt_words)),
        output_tokens=max(1, min(request.output_tokens, args.max_tokens)),
    )


class ReplayError(Exception):
    pass


@dataclass
class Outcome:
    model: str
    kind: str
    status: int
    ttft_s: float | None = None
    latency_s: float | None = None


@dataclass
class Usage:
    """Integrated from the ``/status`` reads."""

    replica_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    memory_byte_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    running: dict[str, int] = field(default_factory=dict)
    asleep: set[str] = field(default_factory=set)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", help="Azure Functions, Azure LLM or BurstGPT CSV")
    parser.add_argument("--generate", action="store_true", help="replay a generated trace")
    parser.add_argument("--models", type=int, default=4, help="models of a generated trace")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of the trace replayed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--requests-per-model-hour", type=float, default=60.0, help="a generated trace's mean rate"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="time compression: 10 replays 10x faster")
    parser.add_argument("--source", help="register the trace's models from this model folder or hub id")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep-alive", type=float, help="keep_alive_s of the models registered")
    parser.add_argument("--keep-alive-policy", choices=("fixed", "adaptive"), help="of the models registered")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at most")
    parser.add_argument("--max-tokens", type=int, default=8, help="cap on each request's output tokens")
    parser.add_argument("--prompt-words", type=int, default=32, help="cap on each request's prompt length")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take")
    parser.add_argument("--plots", help="folder for PNG plots (needs matplotlib)")


def load_trace(args: argparse.Namespace) -> Trace:
    if args.trace:
        return read_trace(args.trace).limited(args.duration)
    if not args.generate:
        raise ReplayError("replay needs --trace FILE or --generate")
    config = GeneratorConfig(
        models=args.models,
        duration_s=args.duration,
        seed=args.seed,
        requests_per_model_hour=args.requests_per_model_hour,
        model_prefix="replay-",
    )
    return generate(config)


def model_map(trace: Trace, registered: list[str], register: bool) -> dict[str, str]:
    """Trace model -> the app's model: itself when registered (from ``--source`` or
    before), else the registered models in turn."""
    if register or set(trace.models) <= set(registered):
        return {m: m for m in trace.models}
    if not registered:
        raise ReplayError("the app has no models: register some, or give --source")
    return {m: registered[i % len(registered)] for i, m in enumerate(trace.models)}


def percentiles(values: list[float], prefix: str) -> dict[str, float | None]:
    points = np.percentile(values, [50, 90, 99]) if values else [None] * 3
    return {
        f"{prefix}_p{p}_s": None if v is None else round(float(v), 4)
        for p, v in zip((50, 90, 99), points, strict=True)
    }


def summary(outcomes: list[Outcome], usage: Usage, models: set[str]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200]
    started = [o for o in ok if o.kind != "warm"]
    out: dict[str, Any] = {
        "requests": len(outcomes),
        "errors": sum(o.status != 200 for o in outcomes),
        "status_429": sum(o.status == 429 for o in outcomes),
        "status_503": sum(o.status == 503 for o in outcomes),
        **percentiles([o.ttft_s for o in ok if o.ttft_s is not None], "ttft"),
        **percentiles([o.latency_s for o in ok if o.latency_s is not None], "latency"),
        "cold_start_fraction": round(len(started) / len(ok), 4) if ok else None,
        "replica_seconds": round(sum(usage.replica_seconds[m] for m in models), 1),
        "memory_gb_seconds": round(sum(usage.memory_byte_seconds[m] for m in models) / 1e9, 2),
    }
    for kind in KINDS:
        of_kind = [o for o in ok if o.kind == kind]
        out[kind] = {
            "requests": len(of_kind),
            **percentiles([o.ttft_s for o in of_kind if o.ttft_s is not None], "ttft"),
            **percentiles([o.latency_s for o in of_kind if o.latency_s is not None], "latency"),
        }
    return out


class Replay:
    def __init__(self, http: httpx.AsyncClient, args: argparse.Namespace, mapping: dict[str, str]) -> None:
        self._http, self._args, self._mapping = http, args, mapping
        self._usage = Usage()
        self._outcomes: list[Outcome] = []
        self._limit = asyncio.Semaphore(args.concurrency)

    async def _poll(self) -> None:
        """Read ``/status`` each second; integrate replicas and engine-host memory."""
        last = time.monotonic()
        while True:
            try:
                status = (await self._http.get("/status")).json()
            except (httpx.HTTPError, ValueError):
                await asyncio.sleep(STATUS_POLL_S)
                continue
            now = time.monotonic()
            dt, last = now - last, now
            usage = self._usage
            usage.running = {
                m["model"]: (m.get("replicas") or {}).get("RUNNING", 0) for m in status["models"]
            }
            usage.asleep = set()
            for node in status["nodes"]:
                hosts = node.get("engine_hosts") or {}
                usage.asleep |= {s["model"] for s in hosts.get("sleeping", [])}
                for host in hosts.get("hosts", []):
                    if host.get("model") and host.get("state") in ("serving", "asleep"):
                        usage.memory_byte_seconds[host["model"]] += (host.get("uss_bytes") or 0) * dt
            for model, running in usage.running.items():
                usage.replica_seconds[model] += running * dt
            await asyncio.sleep(STATUS_POLL_S)

    def _kind(self, model: str) -> str:
        if self._usage.running.get(model):
            return "warm"
        return "hot" if model in self._usage.asleep else "cold"

    async def _send(self, request: Request, due: float) -> None:
        model = self._mapping[request.model]
        async with self._limit:
            kind = self._kind(model)
            sent = as_sent(request, self._args)
            body = {
                "model": model,
                "prompt": " ".join(["hello"] * sent.prompt_tokens),
                "max_tokens": sent.output_tokens,
                "stream": True,
            }
            outcome = Outcome(model, kind, 0)
            try:
                async with self._http.stream("POST", "/v1/completions", json=body) as response:
                    outcome.status = response.status_code
                    async for line in response.aiter_lines():
                        if line.startswith("data:") and outcome.ttft_s is None:
                            outcome.ttft_s = time.monotonic() - due
                    outcome.latency_s = time.monotonic() - due
            except httpx.HTTPError:
                outcome.status = 599  # no answer: counted as an error
        self._outcomes.append(outcome)

    async def _progress(self, total: int) -> None:
        shown = -1
        while True:
            done = len(self._outcomes)
            if done != shown:  # redrawn only when it moves: a log file gets one line per step
                bar = "#" * (30 * done // max(total, 1))
                print(f"\rreplay [{bar:<30}] {done}/{total}", end="", file=sys.stderr, flush=True)
                shown = done
            await asyncio.sleep(PROGRESS_S)

    async def run(self, trace: Trace) -> list[Outcome]:
        poll = asyncio.create_task(self._poll())
        progress = asyncio.create_task(self._progress(len(trace.requests)))
        await asyncio.sleep(min(STATUS_POLL_S, 0.5))  # a first status read before the first request
        start = time.monotonic()
        sends = []
        for request in trace.requests:
            due = start + request.at / self._args.speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sends.append(asyncio.create_task(self._send(request, due)))
        await asyncio.gather(*sends)
        for task in (poll, progress):
            task.cancel()
        print(file=sys.stderr)
        return self._outcomes

    @property
    def usage(self) -> Usage:
        return self._usage


async def _register(
    http: httpx.AsyncClient, args: argparse.Namespace, models: list[str], engine: dict[str, Any]
) -> None:
    autoscaling = {
        k: v
        for k, v in (("keep_alive_s", args.keep_alive), ("keep_alive", args.keep_alive_policy))
        if v is not None
    }
    for model in models:
        body: dict[str, Any] = {"model": model, "model_source": args.source, "engine_kwargs": engine}
        if autoscaling:
            body["autoscaling"] = autoscaling
        response = await http.post("/v1/admin/models", json=body)
        if response.status_code == 409:  # registered by an earlier replay: used as it is
            continue
        if response.is_error:
            raise ReplayError(f"cannot register {model}: {response.status_code} {response.text}")


async def replay(
    args: argparse.Namespace, url: str, headers: dict[str, str], engine: dict[str, Any]
) -> dict[str, Any]:
    trace = load_trace(args)
    if not trace.requests:
        raise ReplayError("the trace has no requests in --duration")
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(
        base_url=url.rstrip("/"), headers=headers, timeout=timeout, limits=limits
    ) as http:
        try:
            if args.source:
                await _register(http, args, trace.models, engine)
            registered = [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        except httpx.HTTPError as exc:
            raise ReplayError(f"cannot reach {url}: {exc}") from exc
        mapping = model_map(trace, registered, bool(args.source))
        driver = Replay(http, args, mapping)
        outcomes = await driver.run(trace)
    models = set(mapping.values())
    per_model = {m: summary([o for o in outcomes if o.model == m], driver.usage, {m}) for m in sorted(models)}
    result = {
        "trace": trace.summary(),
        "overall": summary(outcomes, driver.usage, models),
        "models": per_model,
    }
    if args.plots:
        result["plots"] = plot(outcomes, Path(args.plots))
    return result


def table(result: dict[str, Any]) -> str:
    keys = (
        "requests",
        "errors",
        "status_503",
        "ttft_p50_s",
        "ttft_p99_s",
        "cold_start_fraction",
        "replica_seconds",
    )
    rows = [["MODEL", *(k.upper() for k in keys)]]
    rows += [
        [name, *(str(r[k]) for k in keys)]
        for name, r in [*result["models"].items(), ("overall", result["overall"])]
    ]
    return text_table(rows)


def plot(outcomes: list[Outcome], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in KINDS:
        ttfts = np.sort([o.ttft_s for o in outcomes if o.kind == kind and o.ttft_s is not None])
        if ttfts.size:
            ax.plot(ttfts, np.arange(1, ttfts.size + 1) / ttfts.size, label=f"{kind} ({ttfts.size})")
    ax.set(xscale="log", xlabel="time to first token (s)", ylabel="fraction of requests", title="replay")
    ax.legend()
    fig.tight_layout()
    path = folder / "replay_ttft_cdf.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [str(path)]


def run(args: argparse.Namespace, engine: dict[str, Any]) -> tuple[dict[str, Any], str]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    result = asyncio.run(replay(args, args.url, headers, engine))
    return result, table(result)
