"""The store's DRAM tier: checkpoints in shared memory under a byte budget.

Each rank of a cached checkpoint is one file under a tmpfs folder (``/dev/shm`` by
default) holding its partitions concatenated, so any process on the node maps it and gets
its tensors as views: no read from disk, no copy. Mappings are copy-on-write: an engine
that rewrites a weight in place (CPU kernels repack some) never changes the cached bytes.
Eviction unlinks the files; processes that still map them keep their pages until they
unmap, as Linux does for any unlinked file.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from sllm_ray.store.checkpoint_format import (
    INDEX_FILE,
    CheckpointError,
    TensorEntry,
    check_complete,
    iter_ranks,
    read_index,
    read_into,
    tensors_from_buffer,
)

if TYPE_CHECKING:  # imported where a mapping becomes tensors: the store itself needs none
    import torch

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class BudgetError(Exception):
    """An entry does not fit, even after evicting everything."""


class LruBudget(Generic[K]):
    """Sizes of entries under a byte budget, least recently used first out. An evicted
    entry's files stay valid for the engines that mapped them, so none is held back."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._sizes: OrderedDict[K, int] = OrderedDict()

    @property
    def used_bytes(self) -> int:
        return sum(self._sizes.values())

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def keys(self) -> list[K]:
        """Least recently used first."""
        return list(self._sizes)

    def touch(self, key: K) -> None:
        self._sizes.move_to_end(key)

    def victims_for(self, size: int) -> list[K]:
        """The entries to evict, oldest first, so that ``size`` more bytes fit."""
        if size > self.budget_bytes:
            raise BudgetError(f"{size} bytes exceed the whole budget of {self.budget_bytes}")
        free = self.budget_bytes - self.used_bytes
        victims = []
        for key, entry_size in self._sizes.items():
            if free >= size:
                break
            victims.append(key)
            free += entry_size
        return victims

    def add(self, key: K, size: int) -> None:
        self._sizes[key] = size
        self._sizes.move_to_end(key)

    def remove(self, key: K) -> None:
        self._sizes.pop(key, None)


# madvise(2) advice that maps a range's pages now, for reading, without copy-on-write
# copies (Linux 5.14+). Python's mmap module has no name for it.
MADV_POPULATE_READ = 22
_PREFAULT_CHUNK = 64 << 20


def prefault(buffer: torch.Tensor) -> bool:
    """Map every page of a DRAM-tier mapping into this process now, a chunk per thread.

    Weights used in place would otherwise fault their pages in one by one on first
    touch: about 0.1 s per GB on one core. Returns False where the kernel cannot (older
    than 5.14): the pages then fault in lazily, which is only slower."""
    size = buffer.numel()
    if size == 0:
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    start = buffer.data_ptr()
    # madvise wants a page-aligned start; the mapping begins on a page.
    chunks = [(at, min(_PREFAULT_CHUNK, size - at)) for at in range(0, size, _PREFAULT_CHUNK)]
    threads = max(1, min(len(chunks), len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(threads) as pool:  # ctypes releases the GIL for the call
        results = list(pool.map(lambda c: libc.madvise(start + c[0], c[1], MADV_POPULATE_READ), chunks))
    return all(r == 0 for r in results)


def rank_file(folder: str | Path, rank: int) -> Path:
    """Where the DRAM tier keeps one rank of the checkpoint cached in ``folder``."""
    return Path(folder) / f"rank_{rank}.bin"


@dataclass(frozen=True)
class CachedRank:
    """One rank of a checkpoint in shared memory, as any process on the node opens it."""

    path: str
    index: dict[str, TensorEntry]

    def buffer(self) -> torch.Tensor:
        """The rank's bytes: a copy-on-write mapping of the shared memory, as flat uint8."""
        import torch

        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return torch.empty(0, dtype=torch.uint8)
            mapped = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE)
        # Tensors viewing it keep the mapping alive.
        return torch.frombuffer(mapped, dtype=torch.uint8)

    def tensors(self, buffer: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The rank's tensors as views of ``buffer`` (default: a new mapping)."""
        return tensors_from_buffer(self.index, self.buffer() if buffer is None else buffer)


class DramTier:
    """Checkpoints cached in a tmpfs folder under a byte budget (one node, one owner)."""

    def __init__(self, root: str | Path, budget_bytes: int) -> None:
        self.root = Path(root)
        shutil.rmtree(self.root, ignore_errors=True)  # whatever a previous owner left
        self.root.mkdir(parents=True)
        self._lru: LruBudget[str] = LruBudget(budget_bytes)
        self._ranks: dict[str, list[CachedRank]] = {}
        # Which disk copy each entry was copied from (``_disk_stamp``).
        self._stamps: dict[str, tuple[tuple[int, int, int], ...]] = {}
        self.evictions = 0

    @property
    def used_bytes(self) -> int:
        return self._lru.used_bytes

    @property
    def budget_bytes(self) -> int:
        return self._lru.budget_bytes

    def cached(self) -> list[str]:
        """Cached checkpoints, least recently used first."""
        return self._lru.keys()

    def __contains__(self, key: object) -> bool:
        return key in self._lru

    def put(self, key: str, model_dir: str | Path) -> list[CachedRank]:
        """Copy a checkpoint from local disk into shared memory, evicting as needed. A key
        already cached from this disk copy is kept; one cached from a copy that has been
        replaced since (a new engine layout written over a stale one) is copied again."""
        directories = list(iter_ranks(model_dir))
        if key in self._lru:
            if self._stamps.get(key) == _disk_stamp(directories):
                self._lru.touch(key)
                return self._ranks[key]
            logger.info("DRAM tier: %s changed on disk: caching it again", key)
            self._remove(key)
        ranks = [(d, read_index(d)) for d in directories]
        sizes = [check_complete(d, index) for d, index in ranks]
        for victim in self._lru.victims_for(sum(sizes)):
            self.evict(victim)
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        cached = []
        started = time.monotonic()
        try:
            for (directory, index), size in zip(ranks, sizes, strict=True):
                path = rank_file(folder, int(directory.name.removeprefix("rank_")))
                with open(path, "w+b") as f:
                    f.truncate(size)
                    if size:
                        with mmap.mmap(f.fileno(), size) as target:
                            copied = read_into(directory, memoryview(target))
                        if copied != size:
                            raise CheckpointError(f"{directory} changed while it was read")
                cached.append(CachedRank(str(path), index))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._lru.add(key, sum(sizes))
        self._ranks[key] = cached
        self._stamps[key] = _disk_stamp(directories)
        seconds = time.monotonic() - started
        logger.info(
            "DRAM tier: cached %s (%.1f MB in %.2f s); %.1f of %.1f MB used",
            key,
            sum(sizes) / 1e6,
            seconds,
            self.used_bytes / 1e6,
            self.budget_bytes / 1e6,
        )
        return cached

    def folder(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str, model_dir: str | Path | None = None) -> list[CachedRank] | None:
        """The cached ranks of ``key``; None when it is not cached, or (given the disk copy
        it came from, ``model_dir``) when that copy has been replaced since: the cached
        bytes would not match the index on disk."""
        if key not in self._lru:
            return None
        if model_dir is not None:
            try:
                current = _disk_stamp(list(iter_ranks(model_dir)))
            except CheckpointError:
                return None
            if self._stamps.get(key) != current:
                return None
        self._lru.touch(key)
        return self._ranks[key]

    def evict(self, key: str) -> None:
        if key in self._lru:
            self.evictions += 1
        self._remove(key)
        logger.info("DRAM tier: evicted %s", key)

    def close(self) -> None:
        """Free the whole tier, its folder included (the app stops cleanly: the tmpfs pages
        are the node's memory, not a cache worth keeping; the next start wipes it anyway)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self._lru = LruBudget(self._lru.budget_bytes)
        self._ranks.clear()
        self._stamps.clear()

    def _remove(self, key: str) -> None:
        shutil.rmtree(self.folder(key), ignore_errors=True)
        self._lru.remove(key)
        self._ranks.pop(key, None)
        self._stamps.pop(key, None)


def _disk_stamp(directories: list[Path]) -> tuple[tuple[int, int, int], ...]:
    """Which disk copy these rank folders are: each index file's device, inode and
    modification time. Replacing a copy (a rename of a new folder into place) changes it."""
    stamps = []
    for directory in directories:
        stat = os.stat(directory / INDEX_FILE)
        stamps.append((stat.st_dev, stat.st_ino, stat.st_mtime_ns))
    return tuple(stamps)
