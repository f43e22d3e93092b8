"""The DRAM tier: byte budget, least-recently-used eviction, shared copy-on-write views."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import torch

from sllm_ray.store.checkpoint_format import CheckpointError, save_rank
from sllm_ray.store.dram_tier import BudgetError, DramTier, LruBudget, prefault


def test_lru_budget_evicts_oldest_first() -> None:
    lru: LruBudget[str] = LruBudget(100)
    for key in ("a", "b", "c"):
        lru.add(key, 30)
    assert lru.victims_for(10) == []
    lru.touch("a")  # order now b, c, a
    assert lru.victims_for(40) == ["b"]
    assert lru.victims_for(70) == ["b", "c"]
    assert lru.victims_for(100) == ["b", "c", "a"]
    with pytest.raises(BudgetError, match="whole budget"):
        lru.victims_for(101)


def checkpoint(folder: Path, value: float, numel: int = 250) -> Path:
    save_rank({"w": torch.full((numel,), value), "b": torch.arange(3, dtype=torch.int8)}, folder / "rank_0")
    return folder


def test_put_get_and_evict_under_budget(tmp_path: Path) -> None:
    tier = DramTier(tmp_path / "shm", budget_bytes=2200)  # each checkpoint: 1000 + 8 bytes
    one, two, three = (checkpoint(tmp_path / n, v) for n, v in (("one", 1.0), ("two", 2.0), ("three", 3.0)))
    (rank,) = tier.put("one", one)
    assert torch.equal(rank.tensors()["w"], torch.full((250,), 1.0))
    tier.put("two", two)
    assert tier.cached() == ["one", "two"] and tier.used_bytes == 2016
    tier.get("one")  # now "two" is the least recently used
    tier.put("three", three)
    assert tier.cached() == ["one", "three"]
    assert not (tmp_path / "shm" / "two").exists()

    tier.get("three")
    tier.put("two", two)  # evicts "one", now the least recently used
    assert tier.cached() == ["three", "two"]


def test_close_frees_the_whole_tier(tmp_path: Path) -> None:
    tier = DramTier(tmp_path / "shm", budget_bytes=2200)
    tier.put("one", checkpoint(tmp_path / "one", 1.0))
    tier.close()
    assert not (tmp_path / "shm").exists()
    assert (tier.cached(), tier.used_bytes, tier.get("one")) == ([], 0, None)


def test_views_are_shared_and_copy_on_write(tmp_path: Path) -> None:
    tier = DramTier(tmp_path / "shm", budget_bytes=10_000)
    (rank,) = tier.put("m", checkpoint(tmp_path / "m", 5.0))
    first = rank.tensors()["w"]
    first.mul_(2)  # an engine repacking weights in place
    assert torch.equal(rank.tensors()["w"], torch.full((250,), 5.0))
    # An evicted file stays readable for whoever mapped it.
    second = rank.tensors()["w"]
    tier.evict("m")
    assert torch.equal(second, torch.full((250,), 5.0))


def test_bad_or_oversized_checkpoints_leave_nothing_behind(tmp_path: Path) -> None:
    tier = DramTier(tmp_path / "shm", budget_bytes=500)
    with pytest.raises(BudgetError):
        tier.put("big", checkpoint(tmp_path / "big", 1.0))
    with pytest.raises(CheckpointError, match="rank_"):
        tier.put("empty", tmp_path / "nothing-here")
    assert tier.cached() == [] and list((tmp_path / "shm").iterdir()) == []


def test_prefaulting_maps_every_page_and_keeps_copy_on_write(tmp_path: Path) -> None:
    weights = torch.arange(3 * 1024 * 1024, dtype=torch.float32)  # 12 MiB: several chunks
    save_rank({"w": weights}, tmp_path / "ckpt" / "rank_0")
    tier = DramTier(tmp_path / "shm", budget_bytes=1 << 30)
    (rank,) = tier.put("m", tmp_path / "ckpt")

    def faults_to_touch(buffer: torch.Tensor) -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        int(buffer[::4096].sum())  # one byte per page
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    lazy = faults_to_touch(rank.buffer())
    buffer = rank.buffer()
    assert prefault(buffer)
    assert faults_to_touch(buffer) < lazy / 4  # the pages were mapped already
    view = rank.tensors(buffer)["w"]
    assert torch.equal(view, weights)
    view.mul_(2)
    assert torch.equal(rank.tensors()["w"], weights)  # the cached bytes are untouched
    assert prefault(torch.empty(0, dtype=torch.uint8))
