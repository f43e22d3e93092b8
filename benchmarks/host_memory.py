"""Memory of engine hosts: RSS, PSS and USS of each host process, idle and after use.

In three phases, on the app started here (or at ``--url``, on this machine):

- **prepared**: the pools settled (a host ready, none being prepared), no model started:
  every host is an idle prepared one (vLLM imported, no engine);
- **serving**: the demo model (engine arguments and resources from ``configs/serve.yaml``)
  started by one request and kept up, the pools settled again: its host has an engine,
  the others are the prepared replacements;
- **asleep**: the model back at zero with ``keep_asleep`` on: its engine sleeps in its host.

Each host process is measured with psutil (``memory_full_info``: RSS; PSS, its share of
pages it shares; USS, the memory only it holds, what exiting would free), with its thread
count; the pool's launcher process too where the pool names one. Hosts are found in
``GET /status`` (each node's pool: ``hosts`` [{pid, state, model}], ``launcher_pid``);
for a pool that reports only counts, the ``ray::EngineHost`` processes of this Ray
instance are taken instead, the serving one named by its replica's record.

    python benchmarks/host_memory.py
    python benchmarks/host_memory.py --no-engine --app-arg engine_hosts_per_node=2

Prints one JSON line (also to ``--out``) and a table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import common
import psutil

MODEL = "memory"
MIB = 1024**2
HOST_TITLE = "ray::EngineHost"  # how Ray titles an EngineHost actor's process


def measure(pid: int) -> dict[str, Any] | None:
    try:
        proc = psutil.Process(pid)
        info = proc.memory_full_info()
        children = proc.children(recursive=True)
        return {
            "pid": pid,
            "rss_mib": round(info.rss / MIB, 1),
            "pss_mib": round(getattr(info, "pss", 0) / MIB, 1),
            "uss_mib": round(info.uss / MIB, 1),
            "threads": proc.num_threads(),
            "children": len(children),
            "children_rss_mib": round(sum(_rss(c) for c in children) / MIB, 1),
        }
    except psutil.Error as exc:
        common.log(f"cannot measure pid {pid}: {exc}")
        return None


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def host_processes(own_cluster: bool) -> list[int]:
    """Pids of EngineHost actor processes: this process's descendants when Ray was started
    here (the raylet and its workers are), else every one on the machine."""
    candidates = psutil.Process().children(recursive=True) if own_cluster else psutil.process_iter()
    pids = []
    for proc in candidates:
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if cmdline and cmdline[0].startswith(HOST_TITLE):
            pids.append(proc.pid)
    return pids


def serving_host_pid(model: str) -> int | None:
    """Today's pool: the host pid in the model's replica's record (a Serve handle call)."""
    from ray import serve

    from sllm_ray.names import model_app_name

    try:
        handle = serve.get_deployment_handle(f"model:{model}", app_name=model_app_name(common.APP, model))
        return handle.record.remote().result(timeout_s=30)["host"]["pid"]
    except Exception as exc:
        common.log(f"no host record for {model}: {exc}")
        return None


def hosts(server: common.Server, launched: bool, serving: int | None, asleep: int | None) -> dict[str, Any]:
    """Every host with its state, from ``/status`` where the pools list them, else found."""
    pools = server.pools()
    launchers = [p.launcher_pid for p in pools if p.launcher_pid]
    if any(p.hosts is not None for p in pools):
        found = [
            {"pid": h["pid"], "state": h.get("state"), "model": h.get("model")}
            for p in pools
            for h in p.hosts or ()
            if h.get("pid")
        ]
        return {"source": "status", "hosts": found, "launchers": launchers}
    ready = sum(p.ready for p in pools)
    found = []
    others = []
    for pid in host_processes(own_cluster=launched):
        if pid == serving:
            found.append({"pid": pid, "state": "serving", "model": MODEL})
        elif pid == asleep:
            found.append({"pid": pid, "state": "asleep", "model": MODEL})
        else:
            others.append(pid)
    # The rest are prepared ones when the pools count as many ready; else a host on its
    # way out (its replica gone) may be among them.
    state = "ready" if len(others) <= ready else "unknown"
    found += [{"pid": pid, "state": state, "model": None} for pid in others]
    return {"source": "processes", "hosts": found, "launchers": launchers}


def phase(server: common.Server, args: argparse.Namespace, **known: int | None) -> dict[str, Any]:
    server.wait_pools_settled()
    time.sleep(args.settle_s)
    seen = hosts(server, launched=not args.url, **known)
    measured = []
    for host in seen["hosts"]:
        m = measure(host["pid"])
        if m:
            measured.append({**host, **m})
    launchers = [m for m in map(measure, seen["launchers"]) if m]
    by_state: dict[str, Any] = {}
    for state in dict.fromkeys(h["state"] for h in measured):
        group = [h for h in measured if h["state"] == state]
        by_state[state] = {
            "count": len(group),
            **{
                f"{k}_p50": round(statistics.median(h[k] for h in group), 1)
                for k in ("rss_mib", "pss_mib", "uss_mib")
            },
            "threads_p50": statistics.median(h["threads"] for h in group),
        }
    totals = {f"hosts_{k}_total": round(sum(h[k] for h in measured), 1) for k in ("pss_mib", "uss_mib")}
    return {
        "source": seen["source"],
        "hosts": measured,
        "launchers": launchers,
        "by_state": by_state,
        **totals,
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    model_dir = common.ensure_model(args.model_dir)
    phases: dict[str, Any] = {}
    with common.server(args) as server:
        launched = not args.url
        phases["prepared"] = phase(server, args, serving=None, asleep=None)
        common.log(f"prepared: {phases['prepared']['by_state']}")
        if not args.no_engine:
            server.register(common.model_body(MODEL, model_dir, keep_alive_s=600, keep_asleep=True))
            server.wait_dram()
            common.start_once(server, MODEL)
            pid = serving_host_pid(MODEL) if server.has_ray and launched else None
            phases["serving"] = phase(server, args, serving=pid, asleep=None)
            common.log(f"serving: {phases['serving']['by_state']}")
            server.update(MODEL, {"autoscaling": {"keep_alive_s": 1, "look_back_period_s": 2}})
            server.wait_at_zero([MODEL])
            try:
                common.wait_for(
                    lambda: sum(p.sleeping for p in server.pools()) >= 1, 60, "a sleeping engine", 0.5
                )
            except TimeoutError as exc:
                common.log(f"{exc}: measuring without one")
            phases["asleep"] = phase(server, args, serving=None, asleep=pid)
            common.log(f"asleep: {phases['asleep']['by_state']}")
    return {
        "benchmark": "host_memory",
        "machine": {**common.machine(), "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1)},
        "model": str(model_dir),
        "app_args": args.app_arg,
        "phases": phases,
    }


def table(result: dict[str, Any]) -> str:
    rows = [("phase", "process", "count", "RSS MiB", "PSS MiB", "USS MiB", "threads")]
    for name, p in result["phases"].items():
        for state, s in p["by_state"].items():
            rows.append(
                (
                    name,
                    f"host {state}",
                    str(s["count"]),
                    *(common.fmt(s[k]) for k in ("rss_mib_p50", "pss_mib_p50", "uss_mib_p50")),
                    common.fmt(s["threads_p50"]),
                )
            )
        for launcher in p["launchers"]:
            rows.append(
                (
                    name,
                    "launcher",
                    "1",
                    *(common.fmt(launcher[k]) for k in ("rss_mib", "pss_mib", "uss_mib")),
                    str(launcher["threads"]),
                )
            )
    sources = {p["source"] for p in result["phases"].values()}
    totals = [
        f"{name}: all hosts PSS {p['hosts_pss_mib_total']} MiB, USS {p['hosts_uss_mib_total']} MiB"
        for name, p in result["phases"].items()
    ]
    return "\n".join(
        [common.format_table(rows), *totals, f"(p50 over each group; hosts found from: {', '.join(sources)})"]
    )


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settle-s", type=float, default=5.0, help="idle time before measuring")
    parser.add_argument("--no-engine", action="store_true", help="only the prepared hosts")


if __name__ == "__main__":
    common.cli(__doc__, add_args, main, table)
