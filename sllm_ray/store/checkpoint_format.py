"""The sllm-store checkpoint format, read and written without the ``sllm_store`` package.

A checkpoint is one folder per tensor-parallel rank, ``rank_<r>/``, holding:

- ``tensor_index.json``: ``{name: [offset, size, shape, stride, dtype]}``, ``dtype`` as
  torch prints it (``"torch.bfloat16"``), ``offset`` a byte position in the concatenation
  of the partitions;
- ``tensor.data_0``, ``tensor.data_1``, ...: the bytes, each tensor padded to 8 bytes, a
  new partition started when the next tensor would pass the partition size (10 GiB).

ServerlessLLM's tools read what this module writes and the other way round. Unlike their
writer (issue #322) no file is ever cut short: every byte of every tensor lands on disk
whatever its size, and readers check that the partitions cover the index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are made: the store's answers need none
    import torch

INDEX_FILE = "tensor_index.json"
DATA_PREFIX = "tensor.data_"
PARTITION_BYTES = 10 << 30
ALIGN = 8

# The dtypes the format names, as torch prints them.
DTYPE_NAMES = frozenset(
    f"torch.{name}"
    for name in (
        "float16",
        "bfloat16",
        "float32",
        "float64",
        "int8",
        "uint8",
        "int16",
        "int32",
        "int64",
        "bool",
        "float8_e4m3fn",
        "float8_e5m2",
    )
)


def _dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, name.removeprefix("torch."))


class CheckpointError(Exception):
    """A checkpoint that is missing, incomplete or not in the sllm-store format."""


@dataclass(frozen=True)
class TensorEntry:
    offset: int
    size: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str

    def to_json(self) -> list[object]:
        return [self.offset, self.size, list(self.shape), list(self.stride), self.dtype]


def rank_dir(model_dir: str | Path, rank: int = 0) -> Path:
    return Path(model_dir) / f"rank_{rank}"


def _padded(size: int) -> int:
    return size + (-size % ALIGN)


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in row-major order, without a copy when already contiguous."""
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def save_rank(
    tensors: Mapping[str, torch.Tensor], directory: str | Path, partition_bytes: int = PARTITION_BYTES
) -> dict[str, TensorEntry]:
    """Write one rank's tensors as ``directory/tensor_index.json`` + partitions.

    Tensors that are views of the same memory (tied embeddings) are stored once and share
    an offset, as ServerlessLLM's writer does.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index: dict[str, TensorEntry] = {}
    seen: dict[tuple[object, ...], int] = {}
    offset = 0  # in the concatenation of the partitions
    in_partition = 0
    partition = -1
    out = None
    try:
        for name, tensor in tensors.items():
            if str(tensor.dtype) not in DTYPE_NAMES:
                raise CheckpointError(f"tensor {name!r}: dtype {tensor.dtype} has no sllm-store name")
            size = tensor.numel() * tensor.element_size()
            contiguous_stride = torch.empty(tensor.shape, device="meta").stride()
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape, tensor.dtype)
            if key not in seen:
                if out is None or (in_partition > 0 and in_partition + size > partition_bytes):
                    if out is not None:
                        out.close()
                    partition += 1
                    in_partition = 0
                    out = open(directory / f"{DATA_PREFIX}{partition}", "wb")  # noqa: SIM115
                out.write(_as_bytes(tensor))
                out.write(b"\0" * (_padded(size) - size))
                seen[key] = offset
                offset += _padded(size)
                in_partition += _padded(size)
            index[name] = TensorEntry(
                seen[key], size, tuple(tensor.shape), contiguous_stride, str(tensor.dtype)
            )
        if out is None:  # no tensors: still a valid, empty rank
            out = open(directory / f"{DATA_PREFIX}0", "wb")  # noqa: SIM115
    finally:
        if out is not None:
            out.close()
    tmp = directory / f"{INDEX_FILE}.tmp"
    tmp.write_text(json.dumps({n: e.to_json() for n, e in index.items()}))
    os.replace(tmp, directory / INDEX_FILE)  # the index appears only once the data is whole
    return index


def read_index(directory: str | Path) -> dict[str, TensorEntry]:
    path = Path(directory) / INDEX_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no {INDEX_FILE} in {directory}: not an sllm-store checkpoint") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable: {exc}") from exc
    index = {}
    for name, item in raw.items():
        try:
            offset, size, shape, stride, dtype = item
        except (TypeError, ValueError):
            raise CheckpointError(
                f"{path}: entry {name!r} is not [offset, size, shape, stride, dtype]"
            ) from None
        if dtype not in DTYPE_NAMES:
            raise CheckpointError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
        index[name] = TensorEntry(int(offset), int(size), tuple(shape), tuple(stride), dtype)
    return index


def partitions(directory: str | Path) -> list[Path]:
    """The data files in order (``tensor.data_2`` before ``tensor.data_10``)."""
    found = [p for p in Path(directory).glob(f"{DATA_PREFIX}*") if p.name[len(DATA_PREFIX) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(DATA_PREFIX) :]))


def data_bytes(directory: str | Path) -> int:
    return sum(p.stat().st_size for p in partitions(directory))


def check_complete(directory: str | Path, index: Mapping[str, TensorEntry]) -> int:
    """Raise unless the partitions hold every byte the index points at; return their size."""
    total = data_bytes(directory)
    end = max((e.offset + e.size for e in index.values()), default=0)
    if end > total:
        raise CheckpointError(
            f"checkpoint {directory} is truncated: the index needs {end} bytes, the data files hold {total}"
        )
    return total


def read_into(directory: str | Path, buffer: memoryview) -> int:
    """Copy the partitions, concatenated, into ``buffer``; return the bytes copied."""
    position = 0
    for path in partitions(directory):
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buffer[position:])
                if not n:
                    break
                position += n
    return position


def tensors_from_buffer(index: Mapping[str, TensorEntry], buffer: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views into ``buffer`` (a flat uint8 tensor holding the concatenated partitions): no copy."""
    out = {}
    for name, e in index.items():
        raw = buffer[e.offset : e.offset + e.size]
        out[name] = raw.view(_dtype(e.dtype)).as_strided(e.shape, e.stride)
    return out


def load_rank(directory: str | Path) -> dict[str, torch.Tensor]:
    """Read one rank into memory: one buffer, tensors as views into it."""
    import torch

    index = read_index(directory)
    total = check_complete(directory, index)
    buffer = torch.empty(total, dtype=torch.uint8)
    read_into(directory, memoryview(buffer.numpy()))
    return tensors_from_buffer(index, buffer)


def iter_ranks(model_dir: str | Path) -> Iterable[Path]:
    ranks = sorted(Path(model_dir).glob("rank_*"), key=lambda p: int(p.name.split("_", 1)[1]))
    if not ranks:
        raise CheckpointError(f"{model_dir} has no rank_<r> folders: not an sllm-store checkpoint")
    return ranks
