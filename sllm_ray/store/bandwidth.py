"""A node's tier bandwidths, measured once when its checkpoint store starts (placement).

- ``dram``: bytes per second at which a DRAM-tier file is mapped into an engine
  (``dram_tier.prefault``), the in-place load of an engine layout;
- ``disk``: bytes per second read back from the store's disk, with the file's pages
  dropped from the page cache first (``posix_fadvise(DONTNEED)``), where the kernel obeys.

A probe of ``PROBE_BYTES`` costs a few tens of milliseconds; its files are removed.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

from sllm_ray.store.dram_tier import prefault

PROBE_BYTES = 64 << 20


def _write(path: Path, nbytes: int) -> None:
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20) * (nbytes >> 20))
        f.flush()
        os.fsync(f.fileno())


def dram_bandwidth(folder: Path, nbytes: int = PROBE_BYTES) -> float:
    import torch  # here: the module is imported by the model manager, which never needs it

    path = folder / ".bandwidth-probe"
    try:
        _write(path, nbytes)
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), nbytes, flags=mmap.MAP_PRIVATE)
        started = time.perf_counter()
        prefault(torch.frombuffer(mapped, dtype=torch.uint8))
        return nbytes / max(time.perf_counter() - started, 1e-6)
    finally:
        path.unlink(missing_ok=True)


def disk_bandwidth(folder: Path, nbytes: int = PROBE_BYTES) -> float:
    path = folder / ".bandwidth-probe"
    try:
        _write(path, nbytes)
        with open(path, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            buffer = bytearray(8 << 20)
            started = time.perf_counter()
            while f.readinto(buffer):
                pass
        return nbytes / max(time.perf_counter() - started, 1e-6)
    finally:
        path.unlink(missing_ok=True)


def measure(disk_folder: Path, dram_folder: Path) -> dict[str, float]:
    return {"dram": dram_bandwidth(dram_folder), "disk": disk_bandwidth(disk_folder)}
