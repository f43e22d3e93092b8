"""The `sllm_store` load format builds a working vLLM engine from the store's tiers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs in a fresh process: vLLM finds the load format through the installed plugin entry
# point alone, as every engine process will.
SCRIPT = r"""
import json, pathlib, sys
from vllm import LLM, SamplingParams
from sllm_ray.engine import store_loader
from sllm_ray.store.dram_tier import DramTier

model, checkpoint, dram_dir, shm = sys.argv[1:5]
layout_dir = checkpoint + ".layout"
params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
common = dict(model=model, max_model_len=256, enforce_eager=True, seed=0, kv_cache_memory_bytes=1 << 26)
out, loads = {}, {}

def generate(name, extra):
    kwargs = dict(load_format="sllm_store", model_loader_extra_config=extra) if extra else {}
    llm = LLM(**common, **kwargs)
    out[name] = llm.generate(["Once upon a time"], params)[0].outputs[0].token_ids
    reports = [r for r in llm.collective_rpc(store_loader.worker_load_report) if r]
    loads[name] = {k: reports[0][k] for k in ("tier", "layout", "layout_written")} if reports else None
    del llm

generate("default", None)
generate("store_disk", {"checkpoint": checkpoint})
# By name from DRAM, writing the engine layout on the way.
generate("store_dram", {"checkpoint": checkpoint, "dram_dir": dram_dir, "layout_dir": layout_dir,
                        "layout_staging": layout_dir + ".partial-1"})
tier = DramTier(shm, budget_bytes=1 << 30)
tier.put("layout", layout_dir)
# From shared memory alone: the disk tiers' data is gone.
for folder in (checkpoint, layout_dir):
    for data in pathlib.Path(folder, "rank_0").glob("tensor.data_*"):
        data.unlink()
generate("layout_dram", {"checkpoint": checkpoint, "layout_dir": layout_dir,
                         "layout_dram_dir": str(tier.folder("layout"))})
# A stored layout that does not fit the model (other names): loaded by name, and replaced.
import torch
from sllm_ray.store.checkpoint_format import read_index, save_rank
stale_dir = checkpoint + ".stale"
save_rank({"not_a_weight": torch.zeros(2)}, pathlib.Path(stale_dir, "rank_0"))
generate("stale_layout", {"checkpoint": checkpoint, "dram_dir": dram_dir, "layout_dir": stale_dir,
                          "layout_staging": stale_dir + ".partial-2"})
names = [set(read_index(pathlib.Path(folder, "rank_0"))) for folder in (stale_dir, layout_dir)]
replaced = names[0] == names[1]
result = {"tokens": {k: list(v) for k, v in out.items()}, "loads": loads, "replaced": replaced}
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def stored(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from sllm_ray.store.convert import convert
    from sllm_ray.store.dram_tier import DramTier

    root = tmp_path_factory.mktemp("store")
    checkpoint = convert(tiny_model_dir, root / "disk" / "tiny")
    tier = DramTier(root / "shm", budget_bytes=1 << 30)
    tier.put("tiny", checkpoint)
    return checkpoint, str(tier.folder("tiny"))


def test_store_format_engine_matches_the_safetensors_engine(
    tiny_model_dir: Path, stored: tuple[Path, str]
) -> None:
    checkpoint, dram_dir = stored
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    shm = checkpoint.parent.parent / "shm-layout"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model_dir), str(checkpoint), dram_dir, str(shm)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result_lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result_lines, proc.stderr[-4000:]
    result = json.loads(result_lines[-1].removeprefix("RESULT "))
    tokens, loads = result["tokens"], result["loads"]
    assert len(tokens["default"]) == 12
    assert tokens["store_disk"] == tokens["store_dram"] == tokens["layout_dram"] == tokens["default"]
    assert tokens["stale_layout"] == tokens["default"]
    assert loads["default"] is None  # vLLM's own loader: no report
    assert loads["store_disk"] == {"tier": "disk", "layout": "hf_names", "layout_written": False}
    assert loads["store_dram"] == {"tier": "dram", "layout": "hf_names", "layout_written": True}
    assert loads["layout_dram"] == {"tier": "dram", "layout": "engine_layout", "layout_written": False}
    assert loads["stale_layout"] == {"tier": "dram", "layout": "hf_names", "layout_written": True}
    assert result["replaced"]  # the stale layout now holds the model's own parameters
