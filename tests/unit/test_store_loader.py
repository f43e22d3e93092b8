"""The store load format's choice of tier, without vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sllm_ray.engine.store_loader import store_tensors
from sllm_ray.store.checkpoint_format import CheckpointError, save_rank
from sllm_ray.store.dram_tier import DramTier


def test_dram_tier_is_preferred_and_disk_is_the_fallback(tmp_path: Path) -> None:
    save_rank({"w": torch.arange(4.0)}, tmp_path / "ckpt" / "rank_0")
    tier = DramTier(tmp_path / "shm", budget_bytes=1 << 20)
    (rank,) = tier.put("m", tmp_path / "ckpt")
    extra = {"checkpoint": str(tmp_path / "ckpt"), "dram_file": rank.path}
    tensors, source = store_tensors(extra)
    assert source == "dram" and tensors["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    tier.evict("m")
    tensors, source = store_tensors(extra)
    assert source == "disk" and tensors["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not an sllm-store checkpoint"):
        store_tensors({"checkpoint": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match=r"model_loader_extra_config\.checkpoint"):
        store_tensors({})


def test_the_gpu_path_pins_the_dram_tier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Untested on GPUs: here only that the DRAM mapping is what gets registered.
    import torch

    from sllm_ray.engine import store_loader

    registered: list[tuple[int, int]] = []

    class FakeCudart:
        def cudaHostRegister(self, ptr: int, size: int, flags: int) -> int:
            registered.append((ptr, size))
            return 0

    save_rank({"w": torch.arange(4.0)}, tmp_path / "ckpt" / "rank_0")
    tier = DramTier(tmp_path / "shm", budget_bytes=1 << 20)
    (rank,) = tier.put("m", tmp_path / "ckpt")
    extra = {"checkpoint": str(tmp_path / "ckpt"), "dram_file": rank.path}
    store_tensors(extra, "cpu")
    assert registered == []  # CPU engines never pin
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "cudart", lambda: FakeCudart())
    tensors, source = store_loader.store_tensors(extra, "cuda")
    assert source == "dram" and registered and registered[0][1] == 16
    assert tensors["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
