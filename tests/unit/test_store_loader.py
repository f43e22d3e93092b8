"""The store load format's choice of tier, without vLLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sllm_ray.engine.store_loader import (
    assign_in_place,
    layout_mismatch,
    layout_tensors,
    save_layout,
    store_tensors,
)
from sllm_ray.store.checkpoint_format import CheckpointError, save_rank
from sllm_ray.store.dram_tier import DramTier


def test_dram_tier_is_preferred_and_disk_is_the_fallback(tmp_path: Path) -> None:
    save_rank({"w": torch.arange(4.0)}, tmp_path / "ckpt" / "rank_0")
    tier = DramTier(tmp_path / "shm", budget_bytes=1 << 20)
    tier.put("m", tmp_path / "ckpt")
    extra = {"checkpoint": str(tmp_path / "ckpt"), "dram_dir": str(tier.folder("m"))}
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
    tier.put("m", tmp_path / "ckpt")
    extra = {"checkpoint": str(tmp_path / "ckpt"), "dram_dir": str(tier.folder("m"))}
    store_tensors(extra, "cpu")
    assert registered == []  # CPU engines never pin
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "cudart", lambda: FakeCudart())
    tensors, source = store_loader.store_tensors(extra, "cuda")
    assert source == "dram" and registered and registered[0][1] == 16
    assert tensors["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_engine_layout_ranks_are_published_whole_and_once(tmp_path: Path) -> None:
    staging, final = str(tmp_path / "l.partial-1"), str(tmp_path / "l")
    # Rank 1 of 2 finishes first: nothing is published while rank 0 is missing.
    assert not save_layout({"w": torch.ones(2)}, staging, final, rank=1, world_size=2)
    assert layout_tensors({"layout_dir": final}, rank=1) is None
    assert save_layout({"w": torch.zeros(2)}, staging, final, rank=0, world_size=2)
    for rank, value in ((0, 0.0), (1, 1.0)):
        found = layout_tensors({"layout_dir": final}, rank)
        assert found is not None and found[1] == "disk" and found[0]["w"].tolist() == [value, value]
    # A second engine that wrote the same layout meanwhile leaves the first one in place.
    other = str(tmp_path / "l.partial-2")
    assert not save_layout({"w": torch.full((2,), 7.0)}, other, final, rank=0, world_size=1)
    assert not Path(other).exists()
    assert layout_tensors({"layout_dir": final}, 0)[0]["w"].tolist() == [0.0, 0.0]


def test_a_stale_layout_is_replaced_whole(tmp_path: Path) -> None:
    final = str(tmp_path / "l")
    assert save_layout({"old": torch.zeros(2)}, str(tmp_path / "l.partial-1"), final, rank=0, world_size=1)
    # Two workers of an engine the stored layout does not fit: the old one stays until
    # the new one is whole, then the new one takes its place.
    staging = str(tmp_path / "l.partial-2")
    assert not save_layout({"new": torch.ones(3)}, staging, final, rank=1, world_size=2, replace=True)
    assert set(layout_tensors({"layout_dir": final}, 0)[0]) == {"old"}
    assert save_layout({"new": torch.ones(3)}, staging, final, rank=0, world_size=2, replace=True)
    for rank in (0, 1):
        tensors, _ = layout_tensors({"layout_dir": final}, rank)
        assert set(tensors) == {"new"} and tensors["new"].tolist() == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l"]  # neither staging nor the stale copy


def test_a_layout_stands_in_only_for_the_same_parameters() -> None:
    params = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    assert layout_mismatch({"a": torch.ones(2, 3), "b": torch.ones(4)}, params) is None
    assert "names differ" in layout_mismatch({"a": torch.ones(2, 3)}, params)
    assert "stored torch.float16[2, 3]" in layout_mismatch(
        {"a": torch.ones(2, 3, dtype=torch.float16), "b": torch.ones(4)}, params
    )
    transposed = {"a": torch.ones(3, 2), "b": torch.ones(4)}
    assert "stored torch.float32[3, 2]" in layout_mismatch(transposed, params)


def test_cpu_parameters_become_views_of_the_dram_tier(tmp_path: Path) -> None:
    save_rank({"w": torch.arange(4.0)}, tmp_path / "layout" / "rank_0")
    tier = DramTier(tmp_path / "shm", budget_bytes=1 << 20)
    tier.put("l", tmp_path / "layout")
    extra = {"layout_dir": str(tmp_path / "layout"), "layout_dram_dir": str(tier.folder("l"))}
    found = layout_tensors(extra, 0)
    assert found is not None and found[1] == "dram"
    param = torch.nn.Parameter(torch.empty(4), requires_grad=False)
    assign_in_place(found[0], {"w": param})
    assert param.data_ptr() == found[0]["w"].data_ptr()  # no copy
    param.data.mul_(2)  # an engine rewriting a weight in place ...
    again = layout_tensors(extra, 0)
    assert again[0]["w"].tolist() == [0.0, 1.0, 2.0, 3.0]  # ... never changes the cached bytes
