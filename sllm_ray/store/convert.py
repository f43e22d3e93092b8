"""Source checkpoint (a folder of safetensors) → the store's local-disk tier.

Tensors keep their Hugging Face names; the loader plugin hands them to the model's own
``load_weights``, which fuses and shards them as it does for safetensors, so one converted
copy serves any tensor-parallel size. Written next to the finished copy and renamed into
place, so a crash never leaves a half checkpoint that looks whole.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sllm_ray.log_setup import ProgressLog
from sllm_ray.store.checkpoint_format import CheckpointError, data_bytes, rank_dir, save_rank

if TYPE_CHECKING:  # imported by the conversion itself: the store's answers need none
    import torch

logger = logging.getLogger(__name__)

# Files a vLLM engine reads beside the weights (config, tokenizer, chat template).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Suffix of a checkpoint folder still being written: renamed into place when whole.
PARTIAL = ".partial"


def _safetensors_files(source: Path) -> list[Path]:
    files = sorted(source.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{source} has no *.safetensors files to convert")
    return files


def _tensors(files: list[Path], progress: ProgressLog) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor = f.get_tensor(name)
                progress.advance(tensor.numel() * tensor.element_size())
                yield name, tensor


def convert(source: str | Path, target: str | Path) -> Path:
    """Convert ``source`` into ``target`` (sllm-store format plus the model's other files)."""
    source, target = Path(source), Path(target)
    files = _safetensors_files(source)
    started = time.monotonic()
    staging = target.with_name(target.name + PARTIAL)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for item in source.iterdir():
            if (
                item.is_file()
                and not item.name.endswith(_WEIGHT_SUFFIXES)
                and item.name != "model.safetensors.index.json"
            ):
                shutil.copy2(item, staging / item.name)
        progress = ProgressLog(logger, f"converting {source.name}", sum(p.stat().st_size for p in files))
        save_rank(dict(_tensors(files, progress)), rank_dir(staging))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = data_bytes(rank_dir(target))
    logger.info(
        "converted %s into %s: %.1f MB in %.2f s", source, target, size / 1e6, time.monotonic() - started
    )
    return target
