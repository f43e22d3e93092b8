"""``sllm-ray serve CONFIG``: ``serve run CONFIG`` that drains on SIGTERM.

Bare ``serve run`` dies on SIGTERM (how Docker and Kubernetes stop a process): the Ray
instance it started goes with it and every request in flight is cut. This command is the
driver instead: it joins the Ray cluster at ``--address`` (``RAY_ADDRESS``; none: starts a
local one), runs ``serve run`` against it, and on SIGTERM or SIGINT

1. has each sllm_ray app's model manager start the drain (``control/drain.py``): new
   generation requests get 503 with ``Retry-After`` and ``GET /ready`` turns 503;
2. waits until the requests and streams in flight have finished, at most the app's
   ``drain_timeout_s`` (default 30 s; a second signal, Ctrl-C twice, ends the wait); then
   the ingresses cut the streams still open, each with a final error event (``CUT_S``);
3. stops ``serve run`` with SIGINT, which shuts Serve down (replicas, engine hosts and
   sleeping engines exit through their own shutdown), and exits 0.

``--drain-only`` does step 1 and 2 against a running app and returns: a Kubernetes
``preStop`` hook where KubeRay, not this command, deployed the app.

``SLLM_RAY_HTTP_HOST`` and ``SLLM_RAY_HTTP_PORT`` override the config's ``http_options``
(containers listen on 0.0.0.0 without editing the file).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from sllm_ray import ray_compat
from sllm_ray.config import ENV_PREFIX, app_config
from sllm_ray.names import MANAGER_NAME

logger = logging.getLogger("sllm_ray.serve")

BUILDER = "sllm_ray.builder:build_app"
# How long Serve's own shutdown (after the drain) may take before `serve run` is killed:
# every replica leaves at once, nothing is in flight any more.
SHUTDOWN_S = 60.0
POLL_S = 0.5
# After the drain's bound: how long the ingresses have to cut the streams still open (each
# learns of it at its next poll, each second, and reports none left at the one after).
CUT_S = 3.0


def serve_config(path: Path, environ: dict[str, str]) -> dict[str, Any]:
    """The Serve config file with ``SLLM_RAY_HTTP_HOST``/``_PORT`` over its ``http_options``."""
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        raise ValueError(f"{path} is not a Serve config file (no `applications` list)")
    http = dict(config.get("http_options") or {})
    if host := environ.get(ENV_PREFIX + "HTTP_HOST"):
        http["host"] = host
    if port := environ.get(ENV_PREFIX + "HTTP_PORT"):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{ENV_PREFIX}HTTP_PORT must be a port number, got {port!r}")
        http["port"] = int(port)
    config["http_options"] = http
    return config


def sllm_apps(config: dict[str, Any]) -> dict[str, float]:
    """The config's sllm_ray applications: name -> its drain bound (the environment over
    its args, as the app is built)."""
    return {
        app.get("name", "default"): app_config(app.get("args") or {}).drain_timeout_s
        for app in config["applications"]
        if app.get("import_path") == BUILDER
    }


def drain(apps: dict[str, float], hurry: threading.Event | None = None) -> bool:
    """Drain every app (see the module's doc); True when all finished within their bounds.
    ``hurry`` set (a second stop signal) ends the wait at once."""
    from ray import serve

    managers = {name: serve.get_deployment_handle(MANAGER_NAME, app_name=name) for name in apps}
    started = time.monotonic()
    for manager in managers.values():
        manager.drain.remote().result(timeout_s=30)
    pending = dict(managers)
    while pending:
        if hurry is not None and hurry.is_set():
            logger.warning("second stop signal: not waiting for the requests in flight")
            return False
        for name, manager in list(pending.items()):
            status = manager.drain_status.remote().result(timeout_s=30)
            if status.drained:
                logger.info("app %s drained in %.1f s", name, time.monotonic() - started)
                del pending[name]
            elif time.monotonic() - started > apps[name] + CUT_S:
                logger.warning(
                    "app %s: %d requests still in flight after drain_timeout_s (%g s) and the cut; stopping",
                    name,
                    status.in_flight,
                    apps[name],
                )
                return False
        time.sleep(POLL_S)
    return True


def run(config_path: Path, address: str | None) -> int:
    import ray

    config = serve_config(config_path, dict(os.environ))
    apps = sllm_apps(config)
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        (hurry if stop.is_set() else stop).set()

    ray_compat.set_serve_node_env()  # for the local Ray this may start
    ray.init(address=address, namespace="serve", log_to_driver=False)
    # After ray.init: Ray's core worker installs a handler of its own.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="sllm-serve-") as file:
        yaml.safe_dump(config, file)
        file.flush()
        serve_bin = Path(sys.executable).with_name("serve")
        command = [str(serve_bin), "run", "--address", ray.get_runtime_context().gcs_address, file.name]
        # Its own session: a terminal's Ctrl-C reaches this process only, which drains first.
        child = subprocess.Popen(command, start_new_session=True)
        while not stop.is_set() and child.poll() is None:
            stop.wait(POLL_S)
        if child.poll() is not None:  # `serve run` failed by itself (a bad config)
            return child.returncode or 1
        logger.info("stop signal: draining %s", ", ".join(apps) or "(no sllm_ray app)")
        try:
            drain(apps, hurry)
        except Exception:
            logger.exception("the drain failed; stopping anyway")
        child.send_signal(signal.SIGINT)  # `serve run`: serve.shutdown()
        try:
            code = child.wait(SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            logger.error("serve run did not stop within %g s; killing it", SHUTDOWN_S)
            child.kill()
            code = 1
    ray.shutdown()
    return code


def drain_only(config_path: Path, address: str | None) -> int:
    import ray

    apps = sllm_apps(serve_config(config_path, dict(os.environ)))
    ray.init(address=address or "auto", namespace="serve", log_to_driver=False)
    try:
        return 0 if drain(apps) else 1
    finally:
        ray.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sllm-ray serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="Serve config file (configs/serve.yaml)")
    parser.add_argument(
        "--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster to join (default: start one)"
    )
    parser.add_argument(
        "--drain-only", action="store_true", help="drain the running app and return (a preStop hook)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.drain_only:
            return drain_only(args.config, args.address)
        return run(args.config, args.address)
    except (OSError, ValueError) as exc:
        print(f"sllm-ray serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
