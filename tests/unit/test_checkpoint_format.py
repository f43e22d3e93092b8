"""The sllm-store checkpoint format: round trips, partitions, hand-made checkpoints, damage."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from sllm_ray.store.checkpoint_format import (
    CheckpointError,
    data_bytes,
    load_rank,
    partitions,
    read_index,
    save_rank,
)


def odd_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(3, 5, generator=g, dtype=torch.float32),  # 60 bytes
        "b.bias": torch.randn(5, generator=g).to(torch.bfloat16),  # 10 bytes: padded to 16
        "c.int8": torch.arange(7, dtype=torch.int8),  # 7 bytes
        "d.scalar": torch.tensor(3.5, dtype=torch.float64),
        "e.empty": torch.empty(0, 4, dtype=torch.float16),
        "f.transposed": torch.randn(4, 3, generator=g).t(),  # not contiguous
        "g.mask": torch.tensor([True, False, True]),
    }


def test_round_trip_keeps_values_shapes_and_dtypes(tmp_path: Path) -> None:
    tensors = odd_tensors()
    index = save_rank(tensors, tmp_path / "rank_0")
    loaded = load_rank(tmp_path / "rank_0")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
        assert index[name].offset % 8 == 0
    # Every byte is on disk: the file is the sum of the padded records, nothing cut off.
    assert data_bytes(tmp_path / "rank_0") == sum(-(-e.size // 8) * 8 for e in index.values())


def test_tied_tensors_are_stored_once(tmp_path: Path) -> None:
    embed = torch.randn(16, 8)
    index = save_rank({"embed.weight": embed, "lm_head.weight": embed}, tmp_path)
    assert index["embed.weight"].offset == index["lm_head.weight"].offset
    assert data_bytes(tmp_path) == 16 * 8 * 4
    loaded = load_rank(tmp_path)
    assert torch.equal(loaded["lm_head.weight"], embed)


def test_partitions_rotate_and_read_back_in_order(tmp_path: Path) -> None:
    tensors = {f"t{i}": torch.full((25,), float(i)) for i in range(12)}  # 100 bytes -> 104 each
    save_rank(tensors, tmp_path, partition_bytes=250)  # two tensors per partition
    files = partitions(tmp_path)
    assert [p.name for p in files] == [f"tensor.data_{k}" for k in range(6)]
    assert all(p.stat().st_size == 208 for p in files)
    loaded = load_rank(tmp_path)
    assert all(torch.equal(loaded[f"t{i}"], tensors[f"t{i}"]) for i in range(12))


def test_reads_a_checkpoint_laid_out_by_hand(tmp_path: Path) -> None:
    # As ServerlessLLM's writer lays it out: offsets into the concatenated partitions,
    # 8-byte padding, a tensor moved whole to the next partition when it would not fit.
    (tmp_path / "tensor.data_0").write_bytes(struct.pack("<3f", 1.0, 2.0, 3.0) + b"\0" * 4)
    (tmp_path / "tensor.data_1").write_bytes(struct.pack("<4h", 1, -2, 3, -4))
    index = {
        "w": [0, 12, [3], [1], "torch.float32"],
        "v": [16, 8, [2, 2], [2, 1], "torch.int16"],
    }
    (tmp_path / "tensor_index.json").write_text(json.dumps(index))
    loaded = load_rank(tmp_path)
    assert loaded["w"].tolist() == [1.0, 2.0, 3.0]
    assert loaded["v"].tolist() == [[1, -2], [3, -4]]


def test_written_index_matches_the_format(tmp_path: Path) -> None:
    save_rank({"x": torch.zeros(2, 3, dtype=torch.float16)}, tmp_path)
    raw = json.loads((tmp_path / "tensor_index.json").read_text())
    assert raw == {"x": [0, 12, [2, 3], [3, 1], "torch.float16"]}


def test_damaged_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no tensor_index\.json"):
        load_rank(tmp_path)
    save_rank({"x": torch.ones(100)}, tmp_path)
    data = tmp_path / "tensor.data_0"
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="truncated"):
        load_rank(tmp_path)
    (tmp_path / "tensor_index.json").write_text('{"x": [0, 4, [1], [1], "torch.complex32"]}')
    with pytest.raises(CheckpointError, match="unknown dtype"):
        read_index(tmp_path)
    (tmp_path / "tensor_index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_index(tmp_path)
