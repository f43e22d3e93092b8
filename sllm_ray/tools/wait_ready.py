"""Wait until an sllm_ray app is ready (``GET /ready``), then print one line saying so.

``make run`` starts this beside ``serve run``: the line tells a new user from when a first
request cold-starts in the documented time, instead of paying the engine hosts' preparation.

    python -m sllm_ray.tools.wait_ready [--url http://127.0.0.1:8000] [--timeout 900]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

import httpx

# What the README (*Cold start*) says a first request to the demo model takes on the
# 2-core machine, once the app is ready.
COLD_START_S = 1.0
POLL_S = 2.0  # each poll is a line in the ingress's access log


def _models(http: httpx.Client) -> list[str]:
    """The served models' names; none when the listing needs a key this process lacks."""
    try:
        response = http.get("/v1/models")
        return [m["id"] for m in response.json()["data"]] if response.is_success else []
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def wait_ready(url: str, timeout_s: float) -> int:
    """Poll until ready (0), the timeout (1) or the end of the parent process, ``serve
    run`` under ``make run`` (1): a background job of ``make`` does not get its Ctrl-C."""
    parent = os.getppid()
    deadline = time.monotonic() + timeout_s
    shown: list[str] = []
    key = os.environ.get("SLLM_RAY_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=10) as http:
        while time.monotonic() < deadline and os.getppid() == parent:
            try:
                body = http.get("/ready").json()
            except (httpx.HTTPError, ValueError):
                body = {}  # not serving yet
            if body.get("ready") is True:
                names = ", ".join(_models(http)) or "the models"
                nodes = len(body.get("pools_ready", {}))
                print(
                    f"sllm_ray ready at {url.rstrip('/')}/v1: engine hosts prepared on {nodes} node(s); "
                    f"a first request to {names} cold-starts in about {COLD_START_S:g} s",
                    flush=True,
                )
                return 0
            waiting = body.get("waiting_for") or []
            if waiting and waiting != shown:
                print(f"sllm_ray not ready yet: {'; '.join(waiting)}", flush=True)
                shown = waiting
            time.sleep(POLL_S)
    if os.getppid() == parent:
        print(f"sllm_ray not ready after {timeout_s:g} s: {'; '.join(shown) or 'no answer'}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("SLLM_RAY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before giving up")
    args = parser.parse_args(argv)
    return wait_ready(args.url, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
