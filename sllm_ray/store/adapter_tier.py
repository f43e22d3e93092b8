"""LoRA adapters in a node's checkpoint store: the same tiers as models, source → disk → DRAM.

An adapter is a flat folder of a few small files (PEFT's layout: ``adapter_config.json``
and its weights), which vLLM reads whole when an engine loads it; so each tier holds a
plain copy of that folder, and an engine is pointed at the fastest. The first load of an
adapter on a node copies it from its source (a folder, or a hub id's files) to the
store's disk and from there into shared memory; later loads, on any engine of the node,
read the DRAM copy and never the source. DRAM copies are kept within a byte budget, least
recently used out (the disk copy stays).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from sllm_ray.store.dram_tier import BudgetError, LruBudget
from sllm_ray.store.locate import DISK, DRAM

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterLocation:
    """Where an engine loads an adapter from on this node: a folder and its tier."""

    path: str
    tier: str


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _copy_folder(source: Path, target: Path) -> None:
    """Copy ``source``'s files to ``target`` whole or not at all (a copy cut short by a
    crash is never taken for an adapter)."""
    staging = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        for path in source.iterdir():
            if path.is_file():
                shutil.copyfile(path, staging / path.name)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class AdapterTier:
    """A node's adapters: ``disk_root/<key>`` and ``dram_root/<key>``, the second within
    ``dram_budget_bytes`` (``dram_root`` starts empty: it lies in the DRAM tier's folder,
    which a new store clears)."""

    def __init__(self, disk_root: Path, dram_root: Path, dram_budget_bytes: int) -> None:
        self._disk = disk_root
        self._dram = dram_root
        for root in (disk_root, dram_root):
            root.mkdir(parents=True, exist_ok=True)
            for partial in root.glob("*.partial-*"):
                shutil.rmtree(partial, ignore_errors=True)
        self._lru: LruBudget[str] = LruBudget(dram_budget_bytes)

    def on_disk(self, key: str) -> bool:
        return (self._disk / key).is_dir()

    def copy_in(self, key: str, source: Path) -> None:
        """Copy the adapter at ``source`` (a local folder) into the disk tier."""
        if not self.on_disk(key):
            _copy_folder(source, self._disk / key)

    def locate(self, key: str) -> AdapterLocation:
        """The adapter's fastest copy, copying it into DRAM from disk first when it fits
        (``copy_in`` first)."""
        dram = self._dram / key
        if key in self._lru:
            self._lru.touch(key)
            return AdapterLocation(str(dram), DRAM)
        disk = self._disk / key
        size = _folder_bytes(disk)
        try:
            victims = self._lru.victims_for(size)
        except BudgetError as exc:
            logger.warning("store: adapter %s stays on disk: %s", key, exc)
            return AdapterLocation(str(disk), DISK)
        for victim in victims:
            self._lru.remove(victim)
            shutil.rmtree(self._dram / victim, ignore_errors=True)
        _copy_folder(disk, dram)
        self._lru.add(key, size)
        return AdapterLocation(str(dram), DRAM)

    def status(self) -> dict[str, object]:
        return {
            "budget_bytes": self._lru.budget_bytes,
            "used_bytes": self._lru.used_bytes,
            "adapters": self._lru.keys(),
            "disk": sorted(p.name for p in self._disk.iterdir() if ".partial-" not in p.name),
        }
