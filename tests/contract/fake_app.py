"""Serve the fake-engine app (real ingress, Serve and hosts; no vLLM) on a Ray of its own, for
a contract check of its OpenAPI document (``make contract``). Prints ``READY`` once served;
SIGTERM stops it and the Ray it started.

    python tests/contract/fake_app.py --port 8010
"""

from __future__ import annotations

import argparse
import signal
import tempfile
import threading
from pathlib import Path

import ray
from ray import serve

from sllm_ray.builder import build_app
from sllm_ray.testing.fake_engine import FAKE_ENGINE
from sllm_ray.tools.tiny_model import make_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8010)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="sllm-contract-"))
    model = make_tiny_model(data / "models" / "tiny-llama")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ray.init(address="local", num_cpus=8, object_store_memory=256 * 1024**2, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        config = {
            "engine_cls": FAKE_ENGINE,
            "data_dir": str(data),
            "store_dram_dir": str(data / "dram"),
            "model_roots": [str(data / "models")],
            "request_wait_timeout_s": 30,
            "models": [
                {
                    "model": "warm",
                    "model_source": str(model),
                    "engine_kwargs": {"max_model_len": 512},
                    "resources": {"num_cpus": 0.25},
                    "autoscaling": {"min_replicas": 1},
                }
            ],
        }
        serve.run(build_app(config), name="sllm", route_prefix="/")
        print("READY", flush=True)
        stop.wait()
        serve.shutdown()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
