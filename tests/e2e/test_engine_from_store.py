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

model, checkpoint, dram_file = sys.argv[1:4]
params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
common = dict(model=model, max_model_len=256, enforce_eager=True, seed=0, kv_cache_memory_bytes=1 << 26)
out = {}
for name, extra in (("default", None), ("store_disk", {"checkpoint": checkpoint}),
                    ("store_dram", {"checkpoint": checkpoint, "dram_file": dram_file})):
    kwargs = dict(load_format="sllm_store", model_loader_extra_config=extra) if extra else {}
    if name == "store_dram":  # from shared memory alone: the disk tier's data is gone
        for data in pathlib.Path(checkpoint, "rank_0").glob("tensor.data_*"):
            data.unlink()
    llm = LLM(**common, **kwargs)
    out[name] = llm.generate(["Once upon a time"], params)[0].outputs[0].token_ids
    del llm
print("RESULT " + json.dumps({k: list(v) for k, v in out.items()}))
"""


@pytest.fixture(scope="module")
def stored(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from sllm_ray.store.convert import convert
    from sllm_ray.store.dram_tier import DramTier

    root = tmp_path_factory.mktemp("store")
    checkpoint = convert(tiny_model_dir, root / "disk" / "tiny")
    tier = DramTier(root / "shm", budget_bytes=1 << 30)
    (rank,) = tier.put("tiny", checkpoint)
    return checkpoint, rank.path


def test_store_format_engine_matches_the_safetensors_engine(
    tiny_model_dir: Path, stored: tuple[Path, str]
) -> None:
    checkpoint, dram_file = stored
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model_dir), str(checkpoint), dram_file],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    result_lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and result_lines, proc.stderr[-4000:]
    tokens = json.loads(result_lines[-1].removeprefix("RESULT "))
    assert len(tokens["default"]) == 12
    assert tokens["store_disk"] == tokens["default"]
    assert tokens["store_dram"] == tokens["default"]
