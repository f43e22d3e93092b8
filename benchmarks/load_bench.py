"""Weights into a ready engine: the store's DRAM tier against vLLM's safetensors loader.

For a random-weight Llama of about 1 GB made locally (``models/bench-1g``), in one run:

- the machine's copy bandwidth, measured here: into freshly allocated memory (what a
  loader filling new parameters pays: first-touch page faults) and between warm buffers;
- vLLM's default loader reading the safetensors files from a warm page cache;
- the ``sllm_store`` load format from the store's DRAM tier (shared memory), first by
  Hugging Face name (what an engine's first start on a node does; it also writes the
  engine layout), then from the engine layout cached in DRAM (every later start);

each engine built in a fresh process, in-process engine core, as engine hosts do. It
reports the weight-loading time (vLLM's own "Loading weights took" for the default
loader, the store loader's own timing for ours), the checkpoint size over that time in
GB/s, that as a fraction of each copy bandwidth, and the whole engine build (which also
holds what vLLM does after loading: on a CPU, repacking the linear weights for oneDNN).
Prints one JSON line and a table. ``python benchmarks/load_bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# About 1.03 GB of float32 weights: 5 layers of hidden 2048 (16 heads of 128), MLP 5632.
MODEL_SHAPE = {"hidden_size": 2048, "num_layers": 5, "num_heads": 16, "intermediate_size": 5632}

# Runs in a fresh process per loader, so that neither inherits the other's pages.
ENGINE_SCRIPT = r"""
import asyncio, json, sys, time
from sllm_ray.engine.vllm_compat import prepare_engine_process
from sllm_ray.engine.openai_engine import OpenAIEngine
from sllm_ray.engine import store_loader

source, extra = sys.argv[1], json.loads(sys.argv[2])
kwargs = {"max_model_len": 256, "enforce_eager": True, "kv_cache_memory_bytes": 1 << 26, "dtype": "float32"}
if extra:
    kwargs.update(load_format="sllm_store", model_loader_extra_config=extra)
prepare_engine_process()

async def build():
    engine = OpenAIEngine("bench", source, kwargs, in_process=True)
    started = time.perf_counter()
    await engine.start()
    return time.perf_counter() - started

seconds = asyncio.run(build())
print("RESULT " + json.dumps({"engine_build_s": seconds, "store_load": store_loader.LAST_LOAD}), flush=True)
"""


def copy_bandwidth(nbytes: int) -> dict[str, float]:
    """GB/s of one memcpy into new memory (page faults included) and into warm memory."""
    import torch

    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.empty(nbytes, dtype=torch.uint8)
    started = time.perf_counter()
    dst.copy_(src)
    fresh = time.perf_counter() - started
    warm = min(_timed(lambda: dst.copy_(src)) for _ in range(3))
    return {"fresh_gbps": nbytes / fresh / 1e9, "warm_gbps": nbytes / warm / 1e9}


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def build_engine(source: Path, extra: dict[str, str] | None) -> dict[str, Any]:
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", ENGINE_SCRIPT, str(source), json.dumps(extra or {})],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"engine build failed:\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    if extra:
        result["weights_s"] = result["store_load"]["seconds"]
    else:  # vLLM's default loader reports its own time
        took = re.findall(r"Loading weights took ([0-9.]+) seconds", proc.stdout + proc.stderr)
        result["weights_s"] = float(took[-1])
    return result


def main(args: argparse.Namespace) -> dict[str, Any]:
    from sllm_ray.store.checkpoint_format import data_bytes, rank_dir
    from sllm_ray.store.convert import convert
    from sllm_ray.store.dram_tier import DramTier
    from sllm_ray.tools.tiny_model import make_tiny_model

    model = make_tiny_model(args.model_dir, **MODEL_SHAPE)
    work = Path(tempfile.mkdtemp(prefix="sllm-load-bench-"))
    started = time.perf_counter()
    checkpoint = convert(model, work / "disk")
    convert_s = time.perf_counter() - started
    nbytes = data_bytes(rank_dir(checkpoint))
    tier = DramTier(Path(args.shm_dir) / f"load-bench-{os.getpid()}", budget_bytes=2 * nbytes)
    started = time.perf_counter()
    tier.put("bench", checkpoint)
    dram_put_s = time.perf_counter() - started

    bandwidth = copy_bandwidth(nbytes)
    for path in model.glob("*.safetensors"):  # warm page cache for the default loader
        path.read_bytes()
    default = build_engine(model, None)
    layout_dir = work / "disk" / "layout"
    by_name = build_engine(
        checkpoint,
        {
            "checkpoint": str(checkpoint),
            "dram_dir": str(tier.folder("bench")),
            "layout_dir": str(layout_dir),
            "layout_staging": f"{layout_dir}.partial",
        },
    )
    tier.put("layout", layout_dir)
    in_place = build_engine(
        checkpoint,
        {
            "checkpoint": str(checkpoint),
            "layout_dir": str(layout_dir),
            "layout_dram_dir": str(tier.folder("layout")),
        },
    )
    shutil.rmtree(tier.root, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    for run, layout in ((by_name, "hf_names"), (in_place, "engine_layout")):
        if run["store_load"]["layout"] != layout or run["store_load"]["tier"] != "dram":
            raise RuntimeError(f"expected a {layout} load from DRAM, got {run['store_load']}")

    def rates(run: dict[str, Any]) -> dict[str, float]:
        gbps = nbytes / run["weights_s"] / 1e9
        return {
            "weights_s": round(run["weights_s"], 3),
            "gbps": round(gbps, 2),
            "of_fresh_copy": round(gbps / bandwidth["fresh_gbps"], 2),
            "of_warm_copy": round(gbps / bandwidth["warm_gbps"], 2),
            "engine_build_s": round(run["engine_build_s"], 3),
        }

    return {
        "machine": {"cpus": os.cpu_count()},
        "checkpoint_bytes": nbytes,
        "copy_bandwidth_gbps": {k: round(v, 2) for k, v in bandwidth.items()},
        "store": {
            "convert_s": round(convert_s, 2),
            "dram_put_s": round(dram_put_s, 2),
            "layout_write_s": round(by_name["store_load"]["layout_write_s"], 2),
        },
        "default_safetensors_warm_cache": rates(default),
        "sllm_store_dram_by_name": rates(by_name),
        "sllm_store_dram_engine_layout": rates(in_place),
    }


RUNS = ("default_safetensors_warm_cache", "sllm_store_dram_by_name", "sllm_store_dram_engine_layout")


def table(result: dict[str, Any]) -> str:
    rows = [("", "weights s", "GB/s", "of fresh copy", "of warm copy", "engine build s")]
    for name in (
        "default_safetensors_warm_cache",
        "sllm_store_dram_by_name",
        "sllm_store_dram_engine_layout",
    ):
        r = result[name]
        rows.append(
            (
                name,
                *(
                    str(r[k])
                    for k in ("weights_s", "gbps", "of_fresh_copy", "of_warm_copy", "engine_build_s")
                ),
            )
        )
    bw = result["copy_bandwidth_gbps"]
    rows.append((f"copy GB/s: fresh {bw['fresh_gbps']}, warm {bw['warm_gbps']}", "", "", "", "", ""))
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "bench-1g")
    parser.add_argument("--shm-dir", default="/dev/shm", help="tmpfs for the DRAM tier")
    outcome = main(parser.parse_args())
    print(json.dumps(outcome))
    print(table(outcome))
