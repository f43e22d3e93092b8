"""``sllm-ray``: the admin API from a shell, and traffic replayed or simulated.

    sllm-ray deploy --model tiny --source models/tiny-llama --engine-arg max_model_len=512
    sllm-ray deploy --file model.yaml          # sllm_ray's or ServerlessLLM's JSON/YAML
    sllm-ray update tiny --keep-alive 60 --keep-alive-policy adaptive
    sllm-ray warm tiny --replicas 1 --for 600  # start now, hold 10 minutes
    sllm-ray list | status | delete tiny
    sllm-ray adapter add tiny fine --source models/lora-fine   # a LoRA adapter on tiny
    sllm-ray adapter list tiny | adapter delete tiny fine
    sllm-ray replay --generate --models 4 --duration 120 --source models/tiny-llama
    sllm-ray simulate --nodes 64 --models 200 --duration 86400   # docs/simulator.md
    sllm-ray serve configs/serve.yaml          # `serve run`, draining on SIGTERM

``--url`` and ``--api-key`` default to ``SLLM_RAY_URL`` and ``SLLM_RAY_API_KEY``. Output is a
table for people, ``--json`` for scripts; an error prints the server's message and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from sllm_ray.simulator import command as simulate_command
from sllm_ray.tables import text_table
from sllm_ray.workload import replay
from sllm_ray.workload.traces import TraceError

DEFAULT_URL = "http://127.0.0.1:8000"


class CLIError(Exception):
    pass


def _value(text: str) -> Any:
    """``512`` → 512, ``true`` → True, ``{"a": 1}`` → dict; anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _engine_args(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--engine-arg takes KEY=VALUE, got {pair!r}")
        out[key.replace("-", "_")] = _value(value)
    return out


def _read_file(path: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise CLIError(f"{path} must hold one JSON/YAML object")
    return doc


def _model_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as the fields of sllm_ray's model config (unset flags left out)."""
    body: dict[str, Any] = {}
    if args.source is not None:
        body["model_source"] = args.source
    if args.engine_arg:
        body["engine_kwargs"] = _engine_args(args.engine_arg)
    sections = {
        "autoscaling": {
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target,
            "keep_alive_s": args.keep_alive,
            "keep_alive": args.keep_alive_policy,
        },
        "resources": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
    }
    for section, fields in sections.items():
        given = {k: v for k, v in fields.items() if v is not None}
        if given:
            body[section] = given
    for field in ("max_queued_requests", "max_tokens_limit", "max_ongoing_requests"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    return body


def _is_serverlessllm(doc: dict[str, Any]) -> bool:
    return any(k in doc for k in ("backend", "backend_config", "auto_scaling_config", "num_gpus"))


class Client:
    def __init__(self, url: str, api_key: str | None, timeout: float = 600.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise CLIError(f"cannot reach {self._http.base_url}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {"error": {"message": response.text}}
        if response.is_error:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise CLIError(f"{response.status_code}: {error.get('message', response.text)}")
        return data


def _replicas(described: dict[str, Any]) -> str:
    states = described.get("replicas") or {}
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "0"


def _table(rows: list[list[str]], header: list[str]) -> str:
    return text_table([header, *rows])


def _models_table(models: list[dict[str, Any]]) -> str:
    rows = []
    for m in models:
        config = m["config"]
        if m.get("state") == "invalid":  # a stored record that fails to load: no live state
            rows.append(
                [m["model"], "invalid", "-", "-", "-", "-", "-", str(config.get("model_source", "-"))]
            )
            continue
        scaling = config["autoscaling"]
        rows.append(
            [
                m["model"],
                m.get("state", ""),
                m.get("deployment_status", ""),
                _replicas(m),
                str(m.get("queued", "-")),
                f"{scaling['min_replicas']}-{scaling['max_replicas']}",
                f"{scaling['keep_alive_s']:g}s",
                config["model_source"],
            ]
        )
    table = _table(
        rows, ["MODEL", "STATE", "STATUS", "REPLICAS", "QUEUED", "MIN-MAX", "KEEP-ALIVE", "SOURCE"]
    )
    invalid = [
        f"{m['model']}: stored config is invalid: {m['invalid_reason']}"
        for m in models
        if m.get("invalid_reason")
    ]
    return "\n".join([table, *(_failure_line(m) for m in models if m.get("start_failure")), *invalid])


def _failure_line(described: dict[str, Any]) -> str:
    """A model's failed start: when, how often in a row, the error."""
    failure = described["start_failure"]
    at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(failure["failed_at"]))
    retry = (
        "retrying now"
        if failure["retrying"]
        else f"next request retries after {time.ctime(failure['retry_at'])}"
    )
    return (
        f"{described['model']}: {failure['state']} to start {failure['failures']} time(s) in a row, "
        f"last at {at} ({retry}): {failure['error']}"
    )


def _nodes_table(nodes: list[dict[str, Any]]) -> str:
    """Per node: engine hosts (prepared and free, serving, asleep with their models) and
    what the checkpoint store holds in DRAM and on disk."""
    rows = []
    for node in nodes:
        hosts, store = node["engine_hosts"], node.get("store") or {}
        dram = store.get("dram", {})
        asleep = [s["model"] for s in hosts.get("sleeping", [])]
        rows.append(
            [
                node["node_id"][:12],
                "yes" if node.get("pool_ready") else "no",
                str(hosts.get("free", "?")),
                str(hosts.get("serving", "?")),
                ", ".join(asleep) or "-",
                f"{dram.get('used_bytes', 0) / 1e6:.0f}/{dram.get('budget_bytes', 0) / 1e6:.0f} MB",
                ", ".join(dram.get("checkpoints", [])) or "-",
                str(len(store.get("disk", {}))),
            ]
        )
    return _table(rows, ["NODE", "READY", "FREE", "SERVING", "ASLEEP", "DRAM", "IN DRAM", "ON DISK"])


def _run(args: argparse.Namespace) -> tuple[Any, str]:
    """Do the command; return (JSON result, its human-readable form)."""
    if args.command == "simulate":  # no server
        try:
            return simulate_command.run(args)
        except (simulate_command.SimulateError, TraceError) as exc:
            raise CLIError(str(exc)) from exc
    if args.command == "replay":
        try:
            return replay.run(args, _engine_args(args.engine_arg))
        except (replay.ReplayError, TraceError) as exc:
            raise CLIError(str(exc)) from exc
    client = Client(args.url, args.api_key)
    if args.command == "warm":
        body = {"replicas": args.replicas, "for_s": args.for_s}
        result = client.call("POST", f"/v1/admin/models/{args.name}/warm", body)
        until = time.strftime("%H:%M:%S", time.localtime(result["until"]))
        return result, f"{args.name}: {result['replicas']} replica(s) held until {until}"
    if args.command == "deploy":
        if args.file:
            doc = {**_read_file(args.file), **({"model": args.model} if args.model else {})}
            if _is_serverlessllm(doc):
                result = client.call("POST", "/register", doc)
            else:
                result = client.call("POST", "/v1/admin/models", {**doc, **_model_fields(args)})
        else:
            if not args.model or not args.source:
                raise CLIError("deploy needs --model and --source (or --file)")
            result = client.call("POST", "/v1/admin/models", {"model": args.model, **_model_fields(args)})
        return result, f"registered {result['model']}"
    if args.command == "update":
        doc = _read_file(args.file) if args.file else {}
        if _is_serverlessllm(doc):
            result = client.call("POST", "/update", {**doc, "model": args.name})
        else:
            patch = {**doc, **_model_fields(args)}
            if not patch:
                raise CLIError("update needs at least one setting to change")
            result = client.call("PATCH", f"/v1/admin/models/{args.name}", patch)
        how = "replicas rolled" if result.get("replicas_rolled") else "applied in place"
        return result, f"updated {result['model']} ({how})"
    if args.command == "adapter":
        return _adapter(client, args)
    if args.command == "delete":
        result = client.call("DELETE", f"/v1/admin/models/{args.name}")
        return result, f"deleted {args.name}"
    if args.command == "list":
        result = client.call("GET", "/v1/admin/models")
        return result, _models_table(result["data"])
    result = client.call("GET", "/status")
    return result, f"{_models_table(result['models'])}\n\n{_nodes_table(result['nodes'])}"


def _adapter(client: Client, args: argparse.Namespace) -> tuple[Any, str]:
    path = f"/v1/admin/models/{args.base}/adapters"
    if args.action == "add":
        result = client.call("POST", path, {"adapter": args.adapter, "source": args.source})
        return result, f"added adapter {result['adapter']} to {args.base} ({result['source']})"
    if args.action == "delete":
        result = client.call("DELETE", f"{path}/{args.adapter}")
        return result, f"deleted adapter {args.adapter} of {args.base}"
    result = client.call("GET", path)
    rows = [[a["adapter"], a["source"]] for a in result["data"]]
    return result, _table(rows, ["ADAPTER", "SOURCE"])


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", "-f", help="JSON/YAML model config (sllm_ray's or ServerlessLLM's)")
    parser.add_argument("--source", help="model folder or Hugging Face id")
    parser.add_argument(
        "--engine-arg", action="append", default=[], metavar="KEY=VALUE", help="vLLM engine argument"
    )
    parser.add_argument("--min-replicas", type=int)
    parser.add_argument("--max-replicas", type=int)
    parser.add_argument("--target", type=float, help="target ongoing requests per replica")
    parser.add_argument("--keep-alive", type=float, help="idle seconds before scaling down")
    parser.add_argument(
        "--keep-alive-policy",
        choices=("fixed", "adaptive"),
        help="adaptive: windows from the model's own idle times (--keep-alive the fallback)",
    )
    parser.add_argument("--num-cpus", type=float)
    parser.add_argument("--num-gpus", type=float)
    parser.add_argument("--max-queued-requests", type=int)
    parser.add_argument("--max-tokens-limit", type=int)
    parser.add_argument("--max-ongoing-requests", type=int)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sllm-ray", description="Manage the models of an sllm_ray server.")
    p.add_argument("--url", default=os.environ.get("SLLM_RAY_URL", DEFAULT_URL), help="server URL")
    p.add_argument("--api-key", default=os.environ.get("SLLM_RAY_API_KEY"), help="admin API key")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = p.add_subparsers(dest="command", required=True)
    deploy = sub.add_parser("deploy", help="register a model")
    deploy.add_argument("--model", help="model name clients will use")
    _model_flags(deploy)
    update = sub.add_parser("update", help="change a model's settings")
    update.add_argument("name")
    _model_flags(update)
    sub.add_parser("delete", help="remove a model").add_argument("name")
    sub.add_parser("list", help="registered models and their replicas")
    sub.add_parser("status", help="the server at a glance")
    sub.add_parser("serve", help="serve run CONFIG, draining on SIGTERM (sllm-ray serve --help)")
    adapter = sub.add_parser("adapter", help="a model's LoRA adapters").add_subparsers(
        dest="action", required=True
    )
    add = adapter.add_parser("add", help="serve a LoRA adapter on a base model")
    add.add_argument("base")
    add.add_argument("adapter", help="name clients will use")
    add.add_argument("--source", required=True, help="adapter folder (PEFT's layout) or Hugging Face id")
    adapter.add_parser("list", help="the base model's adapters").add_argument("base")
    delete = adapter.add_parser("delete", help="stop serving an adapter")
    delete.add_argument("base")
    delete.add_argument("adapter")
    warm = sub.add_parser("warm", help="start a model's replicas now and hold them")
    warm.add_argument("name")
    warm.add_argument("--replicas", type=int, default=1)
    warm.add_argument("--for", dest="for_s", type=float, default=300.0, help="seconds to hold them")
    replay.add_arguments(sub.add_parser("replay", help="replay a trace against the app and report"))
    simulate_command.add_arguments(
        sub.add_parser("simulate", help="simulate a cluster's day under each policy (docs/simulator.md)")
    )
    for command in sub.choices.values():
        # After the command too; only set when given, so it does not undo the global flag.
        command.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # a long-running driver with flags of its own
        from sllm_ray.tools import serve

        return serve.main(argv[1:])
    args = parser().parse_args(argv)
    try:
        result, text = _run(args)
    except CLIError as exc:
        print(f"sllm-ray: {exc}", file=sys.stderr)
        return 1
    # Replays and simulations are read by scripts: their JSON is one line, the last.
    indent = None if args.command in ("replay", "simulate") else 2
    print(json.dumps(result, indent=indent) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
