"""The checkpoint store's tiers and answers, run in this process (no Ray)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sllm_ray.engine.records import EngineSpec
from sllm_ray.engine.store_loader import layout_tensors, save_layout
from sllm_ray.names import checkpoint_key
from sllm_ray.store.checkpoint_format import load_rank, rank_dir
from sllm_ray.store.locate import DISK, DRAM, SOURCE, CheckpointLocation, engine_layout
from sllm_ray.store.store_actor import CheckpointStore

APP = "app"
NODE = "a1b2c3d4e5f6" + "0" * 44


def hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    save_file({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}, str(path / "model.safetensors"))
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "tokenizer.json").write_text("{}")
    return path


def new_store(tmp_path: Path, dram_bytes: int = 1 << 20) -> CheckpointStore:
    """A store on this node, its tiers under ``tmp_path`` (what a restart finds again)."""
    return CheckpointStore(APP, NODE, str(tmp_path / "disk"), str(tmp_path / "shm"), dram_bytes, {NODE})


def test_a_locate_without_prepare_leaves_the_tiers_alone(tmp_path: Path) -> None:
    """The replica's locate beside its host claim may be for a start that wakes a sleeping
    engine: it must not convert the model or bring an evicted copy back into DRAM."""
    source = str(hf_folder(tmp_path / "src"))

    async def scenario() -> None:
        store = new_store(tmp_path)
        assert store.locate("m", source, prepare=False) == CheckpointLocation(SOURCE)
        await asyncio.sleep(0.05)
        assert store.status()["disk"] == {} and not store._jobs
        await store.prepare("m", source)
        store.forget("m", source)  # out of DRAM, still on disk
        assert store.locate("m", source, prepare=False).tier == DISK
        await asyncio.sleep(0.05)
        assert store.locate("m", source, prepare=False).tier == DISK  # still not in DRAM
        assert store.locate("m", source).tier == DISK  # a caller that loads: preparing starts
        await store._jobs[checkpoint_key("m", source)]
        assert store.locate("m", source, prepare=False).tier == DRAM

    asyncio.run(scenario())


def test_locate_moves_a_model_up_the_tiers(tmp_path: Path) -> None:
    source = str(hf_folder(tmp_path / "src"))

    async def scenario() -> None:
        store = new_store(tmp_path)
        assert store.locate("m", source) == CheckpointLocation(SOURCE)  # and preparing starts
        prepared = await store.prepare("m", source)
        assert prepared["tier"] == DRAM and prepared["bytes"] == 24 + 16  # 12 bytes padded to 8
        located = store.locate("m", source)
        weights = located.paths
        assert located.tier == DRAM and (Path(weights["dram_dir"]) / "rank_0.bin").exists()
        checkpoint = Path(weights["checkpoint"])
        assert {p.name for p in checkpoint.iterdir()} == {"config.json", "tokenizer.json", "rank_0"}
        assert torch.equal(load_rank(rank_dir(checkpoint))["w"], torch.arange(6.0).reshape(2, 3))

        store.forget("m", source)
        assert store.locate("m", source).tier == DISK
        status = store.status()
        assert status["disk"] == {checkpoint_key("m", source): 40}

        # A restarted store finds its disk tier again.
        again = new_store(tmp_path)
        assert again.locate("m", source).tier == DISK

    asyncio.run(scenario())


def test_over_budget_stays_on_disk(tmp_path: Path) -> None:
    source = str(hf_folder(tmp_path / "src"))

    async def scenario() -> dict:
        store = new_store(tmp_path, dram_bytes=8)
        return await store.prepare("m", source)

    assert asyncio.run(scenario())["tier"] == DISK


def test_checkpoint_keys_follow_the_source() -> None:
    assert checkpoint_key("org/m", "/a") != checkpoint_key("org/m", "/b")
    assert "/" not in checkpoint_key("org/m", "/a")


def test_engine_spec_points_vllm_at_the_store() -> None:
    plain = EngineSpec("m", "/src", {"max_model_len": 64}, "fp")
    assert plain.vllm_kwargs() == {"max_model_len": 64} and plain.engine_source() == "/src"
    weights = {"checkpoint": "/disk/m", "dram_dir": "/shm/m"}
    stored = EngineSpec("m", "/src", {"max_model_len": 64}, "fp", tier=DRAM, store_paths=weights)
    assert stored.engine_source() == "/disk/m"
    assert stored.vllm_kwargs() == {
        "max_model_len": 64,
        "load_format": "sllm_store",
        "model_loader_extra_config": weights,
    }


def test_engine_layouts_follow_the_arguments_that_shape_weights() -> None:
    base = engine_layout({"max_model_len": 64})
    assert engine_layout({"max_model_len": 4096, "enforce_eager": True}) == base
    assert engine_layout({"dtype": "float32"}) != base
    assert engine_layout({"tensor_parallel_size": 2}) != base


def test_an_engine_layout_is_offered_for_writing_then_cached_in_its_place(tmp_path: Path) -> None:
    source = str(hf_folder(tmp_path / "src"))

    async def scenario() -> None:
        store = new_store(tmp_path)
        await store.prepare("m", source, "vllm-x")
        weights = store.locate("m", source, "vllm-x").paths
        # No layout yet: the engine loads by name and is told where to write its layout.
        assert set(weights) == {"checkpoint", "dram_dir", "layout_dir", "layout_staging"}
        assert not Path(weights["layout_dir"]).exists()
        # What the load format does once an engine loaded (names as the engine holds them).
        staging, layout_dir = weights["layout_staging"], weights["layout_dir"]
        assert save_layout({"fused": torch.arange(6.0)}, staging, layout_dir, rank=0, world_size=1)
        assert (await store.prepare("m", source, "vllm-x"))["key"].endswith(".vllm-x")
        located = store.locate("m", source, "vllm-x")
        assert located.tier == DRAM
        # Still a staging folder: an engine the stored layout does not fit replaces it.
        assert set(located.paths) == {"checkpoint", "layout_dir", "layout_dram_dir", "layout_staging"}
        key = checkpoint_key("m", source)
        assert set(store.status()["disk"]) == {key, f"{key}.vllm-x"}  # and no partial copies
        store.forget("m", source)  # the model's layouts leave DRAM with it
        assert store.status()["dram"]["checkpoints"] == []
        assert store.locate("m", source, "vllm-x").tier == DISK

    asyncio.run(scenario())


async def store_with_layout(store: CheckpointStore, source: str, tensors: dict) -> CheckpointLocation:
    """The store's answer once an engine wrote ``tensors`` as model m's layout vllm-x and
    its replica asked for it in DRAM."""
    await store.prepare("m", source, "vllm-x")
    weights = store.locate("m", source, "vllm-x").paths
    assert save_layout(tensors, weights["layout_staging"], weights["layout_dir"], rank=0, world_size=1)
    assert (await store.prepare("m", source, "vllm-x"))["key"].endswith(".vllm-x")
    located = store.locate("m", source, "vllm-x")
    assert located.tier == DRAM
    return located


def test_a_replaced_engine_layout_is_cached_again(tmp_path: Path) -> None:
    source = str(hf_folder(tmp_path / "src"))

    async def scenario() -> None:
        store = new_store(tmp_path)
        stale = await store_with_layout(store, source, {"old": torch.zeros(4)})
        # An engine the stored layout does not fit writes its own over it ...
        staging, layout_dir = stale.paths["layout_staging"], stale.paths["layout_dir"]
        assert save_layout({"new": torch.ones(2)}, staging, layout_dir, 0, 1, replace=True)
        # ... and the DRAM copy of the old one is never handed out with the new index.
        assert store.locate("m", source, "vllm-x").tier == DISK
        prepared = await store.prepare("m", source, "vllm-x")  # what its replica asks for
        assert prepared["key"].endswith(".vllm-x") and prepared["tier"] == DRAM
        fresh = store.locate("m", source, "vllm-x")
        assert fresh.tier == DRAM
        tensors, tier = layout_tensors(fresh.paths, 0)
        assert tier == "dram" and set(tensors) == {"new"} and tensors["new"].tolist() == [1.0, 1.0]
        assert store.status()["dram"]["evictions"] == 0  # a refresh, not an eviction

    asyncio.run(scenario())


def test_a_damaged_disk_copy_is_never_handed_out(tmp_path: Path) -> None:
    source = str(hf_folder(tmp_path / "src"))

    async def scenario() -> None:
        store = new_store(tmp_path)
        located = store.locate("m", source)
        await store.prepare("m", source)
        located = store.locate("m", source)
        store.forget("m", source)
        data = Path(located.paths["checkpoint"]) / "rank_0" / "tensor.data_0"
        data.write_bytes(data.read_bytes()[:10])  # cut short on disk
        assert store.locate("m", source) == CheckpointLocation(SOURCE)  # not the damaged copy
        assert (await store.prepare("m", source))["tier"] == DRAM  # made again from the source
        assert store.locate("m", source).tier == DRAM

    asyncio.run(scenario())


def test_hosts_use_the_replicas_reserved_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from sllm_ray.engine.host import use_devices

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    use_devices(())
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # CPU replicas leave it alone
    use_devices(("2", "3"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_shared_memory_left_by_gone_nodes_is_freed(tmp_path: Path) -> None:
    from sllm_ray.names import dram_folder

    gone, alive = "f" * 56, "e" * 56
    for node in (gone, alive):
        (tmp_path / "shm" / dram_folder(APP, node)).mkdir(parents=True)
    (tmp_path / "shm" / dram_folder("other-app", gone)).mkdir()
    (tmp_path / "shm" / "unrelated").mkdir()
    CheckpointStore(APP, NODE, str(tmp_path / "disk"), str(tmp_path / "shm"), 1 << 20, {NODE, alive})
    left = sorted(p.name for p in (tmp_path / "shm").iterdir())
    assert left == sorted(
        [dram_folder(APP, alive), dram_folder(APP, NODE), dram_folder("other-app", gone), "unrelated"]
    )


def adapter_folder(path: Path, weight_bytes: int = 1000) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text('{"r": 8, "target_modules": ["q_proj"]}')
    (path / "adapter_model.safetensors").write_bytes(os.urandom(weight_bytes))
    return path


def test_an_adapter_is_read_from_its_source_once_per_node(tmp_path: Path) -> None:
    source = adapter_folder(tmp_path / "lora")
    files = {p.name: p.read_bytes() for p in source.iterdir()}

    async def scenario() -> None:
        store = new_store(tmp_path)
        first = await store.adapter("a", str(source))
        assert first.tier == DRAM and Path(first.path).is_relative_to(tmp_path / "shm")
        assert {p.name: p.read_bytes() for p in Path(first.path).iterdir()} == files
        shutil.rmtree(source)  # later loads on this node never read the source
        assert await store.adapter("a", str(source)) == first
        restarted = new_store(tmp_path)  # DRAM cleared, the disk copy kept
        again = await restarted.adapter("a", str(source))
        assert again.tier == DRAM and {p.name: p.read_bytes() for p in Path(again.path).iterdir()} == files
        assert restarted.status()["adapters"]["adapters"] == [checkpoint_key("a", str(source))]

    asyncio.run(scenario())


def test_adapters_beyond_their_dram_share_are_evicted_or_stay_on_disk(tmp_path: Path) -> None:
    # A 1 MiB DRAM tier: the adapters' share is about 105 kB.
    sources = [adapter_folder(tmp_path / f"lora{i}", 60_000) for i in range(2)]
    huge = adapter_folder(tmp_path / "huge", 200_000)

    async def scenario() -> None:
        store = new_store(tmp_path)
        first = await store.adapter("a0", str(sources[0]))
        second = await store.adapter("a1", str(sources[1]))
        assert first.tier == second.tier == DRAM
        assert not Path(first.path).exists()  # least recently used out of DRAM
        assert (await store.adapter("a0", str(sources[0]))).tier == DRAM  # back from disk
        assert (await store.adapter("big", str(huge))).tier == DISK

    asyncio.run(scenario())
