"""What the benchmarks share: the app started in-process (or one already running, by URL),
the plain Ray Serve baseline, streaming requests timed to their first token, waits on the
admin API, ``/status`` and Serve's status, summaries, tables and output.

The benchmarks talk to the app only through its HTTP API (OpenAI routes, the admin API,
``GET /status``) and Serve's public status, so they measure any version of the engine
room the same way (the baseline alone imports ``sllm_ray.engine.openai_engine``). Scripts
in this folder import it as ``common``: their folder is on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from sllm_ray import ray_compat

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray starts: its workers inherit it
ray_compat.set_serve_node_env()  # the same, for Serve's controller
REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO / "models" / "tiny-llama"
APP = "sllm"
PROMPT = "Once upon a time"


def log(message: str) -> None:
    """Progress and failures go to stderr; stdout holds the JSON line and the table."""
    print(message, file=sys.stderr, flush=True)


# The demo model (configs/serve.yaml).


def demo_model() -> dict[str, Any]:
    """The demo's model entry in ``configs/serve.yaml``: engine arguments, resources."""
    import yaml

    config = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    return config["applications"][0]["args"]["models"][0]


def demo_engine_kwargs() -> dict[str, Any]:
    return dict(demo_model()["engine_kwargs"])


def ensure_model(model_dir: Path) -> Path:
    """The tiny demo model, made locally if it is not there yet."""
    from sllm_ray.tools.tiny_model import make_tiny_model

    if not (model_dir / "config.json").exists():
        make_tiny_model(model_dir)
    return model_dir.resolve()


def model_body(
    name: str,
    model_dir: Path,
    *,
    keep_alive_s: float,
    look_back_period_s: float = 2.0,
    num_cpus: float | None = None,
    keep_asleep: bool = False,
) -> dict[str, Any]:
    """A registration (``POST /v1/admin/models``) of the demo model under ``name``: the
    demo's engine arguments and resources, at zero replicas, with a short keep-alive so
    that the benchmark can bring it back to zero quickly."""
    demo = demo_model()
    resources = dict(demo.get("resources", {}))
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    return {
        "model": name,
        "model_source": str(model_dir),
        "engine_kwargs": demo_engine_kwargs(),
        "autoscaling": {
            "min_replicas": 0,
            "max_replicas": 1,
            "keep_alive_s": keep_alive_s,
            "look_back_period_s": look_back_period_s,
        },
        "resources": resources,
        "keep_asleep": keep_asleep,
    }


def keep_alive_body(
    name: str, model_dir: Path, *, keep_alive_s: float, policy: str, bin_s: float, keep_asleep: bool = False
) -> dict[str, Any]:
    """``model_body`` with a keep-alive policy (``fixed`` or ``adaptive``) and its
    histogram's bin width."""
    body = model_body(name, model_dir, keep_alive_s=keep_alive_s, keep_asleep=keep_asleep)
    body["autoscaling"] |= {"keep_alive": policy, "keep_alive_bin_s": bin_s}
    return body


def generated_trace_args(args: argparse.Namespace, *more: str) -> argparse.Namespace:
    """``sllm-ray replay``'s arguments for the generated trace of a benchmark's own
    ``--models``, ``--duration``, ``--seed`` and ``--requests-per-model-hour``, and ``more``."""
    from sllm_ray.workload import replay

    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    return parser.parse_args(
        [
            "--generate",
            *("--models", str(args.models), "--duration", str(args.duration), "--seed", str(args.seed)),
            *("--requests-per-model-hour", str(args.requests_per_model_hour)),
            *more,
        ]
    )


def completion_body(model: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}


# The plain-Serve baseline (what Ray Serve LLM does).


class PlainServer:
    """The baseline replica: vLLM imported and the engine built (AsyncLLM with its own
    engine-core process, weights from safetensors) when the replica starts. Called
    through its handle (``generate``) or over HTTP (``__call__``: the body of
    ``/v1/completions`` or ``/v1/chat/completions``, Server-Sent Events back)."""

    async def __init__(self, model: str, source: str, engine_kwargs: dict[str, Any]) -> None:
        self._timeline = {"replica_started_at": time.time()}
        from sllm_ray.engine.openai_engine import OpenAIEngine

        self._engine = OpenAIEngine(model, source, engine_kwargs)
        self._timeline["engine_started_at"] = time.time()
        await self._engine.start()
        self._timeline["engine_ready_at"] = time.time()

    def record(self) -> dict[str, Any]:
        return dict(self._timeline)

    async def generate(self, body: dict[str, Any]) -> AsyncIterator[Any]:
        from sllm_ray.protocol import Endpoint

        async for item in self._engine.generate(Endpoint.COMPLETIONS, body):
            yield item

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        from sllm_ray.protocol import Endpoint

        body = await request.json()
        endpoint = Endpoint.CHAT if "messages" in body else Endpoint.COMPLETIONS
        stream = self._engine.generate(endpoint, body)
        head = await anext(stream)
        if head.body is not None:
            return JSONResponse(head.body, status_code=head.status)
        return StreamingResponse(stream, media_type="text/event-stream")


BASELINE_DEPLOYMENT = "PlainServer"


def plain_app(
    model: str,
    source: Path,
    engine_kwargs: dict[str, Any],
    *,
    num_cpus: float = 1.0,
    look_back_period_s: float | None = None,
) -> Any:
    """A plain Serve deployment of ``model`` at zero replicas: Serve's default autoscaling
    metrics, scaling up at once and down 1 s after its load is gone."""
    from ray import cloudpickle, serve

    # By value: a Serve controller started by another job (``--url``) starts replicas
    # whose Python path does not hold this folder.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    autoscaling = {
        "min_replicas": 0,
        "max_replicas": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 1,
        "downscale_to_zero_delay_s": 1,
    }
    if look_back_period_s is not None:  # only how soon it goes back to zero
        autoscaling["look_back_period_s"] = look_back_period_s
    deployment = serve.deployment(PlainServer, name=BASELINE_DEPLOYMENT).options(
        autoscaling_config=autoscaling, ray_actor_options={"num_cpus": num_cpus}
    )
    return deployment.bind(model, str(source), engine_kwargs)


def baseline_app_name(model: str) -> str:
    return f"baseline-{model}"


def baseline_route(model: str) -> str:
    return f"/baseline/{model}"


def deploy_baselines(models: list[str], source: Path, engine_kwargs: dict[str, Any], num_cpus: float) -> None:
    """One plain Serve application per model, each at its own route."""
    from ray import serve

    for model in models:
        app = plain_app(model, source, engine_kwargs, num_cpus=num_cpus, look_back_period_s=2)
        serve.run(app, name=baseline_app_name(model), route_prefix=baseline_route(model))


def delete_baselines(models: list[str]) -> None:
    if not models:
        return
    from ray import serve

    for model in models:
        with contextlib.suppress(Exception):
            serve.delete(baseline_app_name(model))


# Serve's status (needs Ray in this process).


def replica_count(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    d = status.deployments.get(deployment) if status else None
    return sum(d.replica_states.values()) if d else 0


def replica_record(model: str, app: str = APP) -> dict[str, Any]:
    """The model replica's own record (``ModelServer.record``): its timeline and its host's."""
    from ray import serve

    from sllm_ray.names import model_app_name

    handle = serve.get_deployment_handle(f"model:{model}", app_name=model_app_name(app, model))
    return handle.record.remote().result(timeout_s=30)


def replica_marks(record: dict[str, Any]) -> dict[str, float | None]:
    """Wall-clock times of a replica's start from its record, in order. A worker started
    before the request was started ahead of demand (``engine/replica_workers.py``)."""
    host = record["host"]
    return {
        "worker_started": record["worker_started_at"],
        "replica_scheduled": record["replica_started_at"],
        "host_claimed": record["host_claimed_at"],
        "checkpoint_located": record.get("checkpoint_located_at"),
        "engine_build_started": host["engine_started_at"],
        "weights_loaded": host["load"]["finished_at"] if host["load"] else None,
        "engine_woken": host["woke_at"],
        "engine_ready": record["engine_ready_at"],
        "request_routed": record.get("first_request_at"),
    }


def relative(marks: dict[str, float | None], t0: float) -> dict[str, float | None]:
    return {k: (round(v - t0, 3) if v is not None else None) for k, v in marks.items()}


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def wait_baselines_at_zero(models: list[str], timeout_s: float = 300) -> None:
    wait_for(
        lambda: all(replica_count(baseline_app_name(m), BASELINE_DEPLOYMENT) == 0 for m in models),
        timeout_s,
        "the baseline deployments to scale to zero",
        poll_s=0.5,
    )


# The app: launched here, or one already running.


READY_STATES = ("ready", "free")
ON_THE_WAY_STATES = ("preparing", "starting", "forking")


def _count(value: Any) -> int:
    """A count as pools report one: a number, or a list of the things counted."""
    if isinstance(value, list | dict):
        return len(value)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


@dataclass
class Pool:
    """One node's engine-host pool as ``GET /status`` reports it (``nodes[i]["engine_hosts"]``
    or ``["pool"]``), read from either shape: a list of ``hosts`` (each with its pid, its
    state ready/serving/asleep and its model), the launcher's pid (``launcher_pid`` or
    ``launcher.pid``) and ``ready`` as a flag (the pool can hand out hosts), where the pool
    reports them; else counts (``ready``, ``serving``, ``preparing``, ``sleeping``)."""

    node_id: str | None
    ready: int  # hosts ready to be claimed
    preparing: int  # hosts on their way to ready
    serving: int
    sleeping: int
    hosts: list[dict[str, Any]] | None
    launcher_pid: int | None
    prepared: bool  # the pool's own word (``ready: false`` while its launcher prepares)
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def of(cls, node: dict[str, Any]) -> Pool:
        pool = node.get("pool") or node.get("engine_hosts") or {}
        hosts = pool.get("hosts") if isinstance(pool.get("hosts"), list) else None

        def in_state(states: tuple[str, ...]) -> int:
            return sum(1 for h in hosts or () if h.get("state") in states)

        preparing = _count(pool.get("preparing")) + _count(pool.get("forking"))
        launcher = pool.get("launcher") if isinstance(pool.get("launcher"), dict) else {}
        return cls(
            node_id=node.get("node_id", pool.get("node_id")),
            ready=in_state(READY_STATES) if hosts is not None else _count(pool.get("ready")),
            preparing=max(preparing, in_state(ON_THE_WAY_STATES)),
            serving=in_state(("serving",)) if hosts is not None else _count(pool.get("serving")),
            sleeping=max(in_state(("asleep", "sleeping")), _count(pool.get("sleeping"))),
            hosts=hosts,
            launcher_pid=pool.get("launcher_pid") or launcher.get("pid"),
            prepared=pool.get("ready") is not False and "error" not in pool,
            raw=pool,
        )

    @property
    def settled(self) -> bool:
        """Quiet: the pool prepared, no host on its way to ready and, where it reports
        them, its replica workers all started; a pool that reports only counts also has a
        host ready (unless its size is 0). A node whose status
        names no pool at all counts as settled: there is nothing to wait for."""
        if not self.raw:
            return True
        if not self.prepared or self.preparing:
            return False
        workers = self.raw.get("replica_workers")
        if isinstance(workers, dict):
            ready = _count(workers.get("idle")) - _count(workers.get("starting"))
            if ready < _count(workers.get("target")):
                return False  # Ray is still starting replica workers: seconds of CPU each
        return self.hosts is not None or self.ready >= min(1, _count(self.raw.get("size", 1)))


class Server:
    """The app under test, over HTTP: the admin API, ``/status``, and the models' replica
    counts as the admin API reports them (Serve's own status, read by the manager)."""

    def __init__(self, url: str, api_key: str | None, has_ray: bool) -> None:
        self.url = url.rstrip("/")
        self.has_ray = has_ray
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=self.headers, timeout=300)
        self.registered: list[str] = []
        self.failed_registrations: list[str] = []  # attempts that failed, retried

    def register(self, body: dict[str, Any], attempts: int = 4) -> None:
        """Register a model; one left from an earlier run is replaced. Failed attempts are
        printed and retried (back-to-back registrations can fail today: issue 11)."""
        name = body["model"]
        for attempt in range(1, attempts + 1):
            response = self.http.post("/v1/admin/models", json=body)
            if response.status_code == 409:
                self.http.delete(f"/v1/admin/models/{name}")
                continue
            if response.status_code == 201:
                self.registered.append(name)
                return
            failure = f"{name} (attempt {attempt}): {response.status_code} {response.text[:300]}"
            log(f"registering failed: {failure}")
            self.failed_registrations.append(failure)
            time.sleep(2)
        raise RuntimeError(f"could not register {name}")

    def update(self, name: str, patch: dict[str, Any]) -> None:
        self.http.patch(f"/v1/admin/models/{name}", json=patch).raise_for_status()

    def delete_registered(self) -> None:
        for name in self.registered:
            with contextlib.suppress(httpx.HTTPError):
                self.http.delete(f"/v1/admin/models/{name}")
        self.registered.clear()

    def replicas(self) -> dict[str, int]:
        """Each model's replicas (all states) from the admin API."""
        data = self.http.get("/v1/admin/models").raise_for_status().json()["data"]
        return {m["model"]: sum(m.get("replicas", {}).values()) for m in data}

    def status(self) -> dict[str, Any]:
        return self.http.get("/status").raise_for_status().json()

    def pools(self) -> list[Pool]:
        return [Pool.of(node) for node in self.status().get("nodes", [])]

    def wait_at_zero(self, models: list[str], timeout_s: float = 300) -> None:
        def at_zero() -> bool:
            counts = self.replicas()
            return all(counts.get(m, 0) == 0 for m in models)

        wait_for(at_zero, timeout_s, f"{', '.join(models)} to scale to zero", poll_s=0.25)

    def wait_pools_settled(self, timeout_s: float = 300, quiet_s: float = 1.0) -> float:
        """Wait until every node's pool is settled (``Pool.settled``: a host still being
        prepared would compete for the CPU with what is measured); seconds waited. On
        timeout the run goes on, with a warning."""
        started = time.monotonic()
        try:
            wait_for(lambda: all(p.settled for p in self.pools()), timeout_s, "the engine host pools", 0.5)
        except TimeoutError:
            log(f"warning: pools not settled after {timeout_s} s: {[p.raw for p in self.pools()]}")
        time.sleep(quiet_s)
        wait_cpu_quiet()
        return round(time.monotonic() - started, 1)

    def wait_dram(self, timeout_s: float = 180) -> None:
        """Wait until every node's checkpoint store holds a checkpoint in DRAM (skipped
        when ``/status`` does not report stores)."""

        def in_dram() -> bool:
            nodes = self.status().get("nodes", [])
            stores = [n.get("store") for n in nodes]
            if any(s is not None and "dram" not in s for s in stores):
                return True  # another shape: nothing to wait for
            return bool(nodes) and all(s and s["dram"].get("checkpoints") for s in stores)

        wait_for(in_dram, timeout_s, "the checkpoint in the stores' DRAM tier", poll_s=0.5)


def wait_cpu_quiet(busy_below: float = 0.35, timeout_s: float = 60, sample_s: float = 0.5) -> None:
    """Wait until this machine's CPUs are mostly idle (busy less than ``busy_below`` of
    them over ``sample_s``): a baseline's vLLM processes go on exiting, and Ray reaping its
    workers, for seconds after Serve shows it at zero, and a measurement beside them
    measures them. On timeout the run goes on, with a warning."""
    deadline = time.monotonic() + timeout_s
    while (busy := psutil.cpu_percent(sample_s) / 100) >= busy_below:
        if time.monotonic() > deadline:
            log(f"warning: the CPUs still {busy:.0%} busy after {timeout_s} s")
            return


def numbers(text: str) -> list[float | int]:
    """``"0,2.5,10"`` -> ``[0, 2.5, 10]`` (whole numbers as ints)."""
    values = [float(x) for x in text.split(",") if x.strip()]
    return [int(v) if v.is_integer() else v for v in values]


def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="base URL of a running app (default: start one in this process)")
    parser.add_argument(
        "--ray-address", help="with --url: the app's Ray cluster (for the baseline, Serve's status)"
    )
    parser.add_argument("--api-key", default=os.environ.get("SLLM_RAY_API_KEY"), help="an admin key")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port of the app started here")
    parser.add_argument("--num-cpus", type=float, default=16, help="logical CPUs of the Ray started here")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument(
        "--app-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the app config started here (value read as JSON when it parses), "
        "e.g. engine_hosts_per_node=2; repeatable",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")


def _app_args(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--app-arg wants KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[Server]:
    """The app from ``sllm_ray.builder`` started in this process (local Ray, its own data
    folder and DRAM tier), or the one at ``--url``; models registered through it are
    deleted at the end."""
    import ray
    from ray import serve

    if args.url:
        if args.ray_address:
            ray.init(address=args.ray_address, log_to_driver=False)
        srv = Server(args.url, args.api_key, has_ray=bool(args.ray_address))
        try:
            yield srv
        finally:
            srv.delete_registered()
            if args.ray_address:
                ray.shutdown()
        return

    from sllm_ray.builder import build_app

    data_dir = Path(tempfile.mkdtemp(prefix="sllm-bench-"))
    dram_dir = Path("/dev/shm" if Path("/dev/shm").is_dir() else data_dir) / f"sllm-bench-{os.getpid()}"
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        object_store_memory=256 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        # No job runtime_env: Ray would start every replica's worker from scratch.
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        config = {
            "data_dir": str(data_dir),
            "store_dram_dir": str(dram_dir),  # its own: a store removes folders of nodes it does not know
            "model_roots": [str(args.model_dir.resolve().parent)],
            "models": [],
            **_app_args(args.app_arg),
        }
        serve.run(build_app(config), name=APP, route_prefix="/")
        yield Server(f"http://127.0.0.1:{args.port}", args.api_key, has_ray=True)
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        shutil.rmtree(dram_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)


# Requests.


def _has_token(event: dict[str, Any]) -> bool:
    """A completion chunk carrying generated output (vLLM sends one per token)."""
    for choice in event.get("choices") or ():
        if choice.get("text") is not None or (choice.get("delta") or {}).get("content") is not None:
            return True
    return False


async def timed_stream(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One streaming request: seconds to its first token and to its end, or why it failed
    (an HTTP error, an error event in the stream, no token, a broken connection)."""
    out: dict[str, Any] = {"model": body["model"], "ttft_s": None, "total_s": None, "error": None}
    started = time.perf_counter()
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                out["error"] = f"HTTP {response.status_code}: {text[:300]}"
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line.removeprefix("data: "))
                    if "error" in event:
                        out["error"] = f"error event: {json.dumps(event['error'])[:300]}"
                        break
                    if out["ttft_s"] is None and _has_token(event):
                        out["ttft_s"] = round(time.perf_counter() - started, 4)
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["total_s"] = round(time.perf_counter() - started, 4)
    if out["error"] is None and out["ttft_s"] is None:
        out["error"] = "stream ended without a token"
    return out


def async_client(server: Server, timeout_s: float, connections: int = 64) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url,
        headers=server.headers,
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


def one_request(server: Server, path: str, body: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with async_client(server, timeout_s, connections=1) as client:
            return await timed_stream(client, path, body)

    return asyncio.run(run())


def start_once(server: Server, model: str, max_tokens: int = 8) -> dict[str, Any]:
    """One request to ``model``, not measured (the node's first engine of a model writes
    its engine layout); a model that cannot start ends the benchmark."""
    result = one_request(server, "/v1/completions", completion_body(model, max_tokens))
    log(f"started {model}: {result}")
    if result["error"]:
        raise SystemExit(f"{model} did not start: {result['error']}")
    return result


# Summaries and output.


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50_s": None, "p99_s": None, "max_s": None}
    return {
        "n": len(values),
        "p50_s": round(quantile(values, 0.5), 3),
        "p99_s": round(quantile(values, 0.99), 3),
        "max_s": round(max(values), 3),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}{unit}"
    return f"{value}{unit}"


def format_table(rows: list[tuple[str, ...]]) -> str:
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in rows)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def emit(result: dict[str, Any], table: str, out: Path | None) -> None:
    """The JSON line on stdout (and in ``out``), then the table."""
    line = json.dumps(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(line + "\n")
    print(line)
    print(table, flush=True)


def cli(
    doc: str,
    add_args: Callable[[argparse.ArgumentParser], None],
    main: Callable[[argparse.Namespace], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
) -> None:
    """A benchmark's command line: its own options and the server's, run, output."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(parser)
    add_server_args(parser)
    args = parser.parse_args()
    result = main(args)
    emit(result, table(result), args.out)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count()}
