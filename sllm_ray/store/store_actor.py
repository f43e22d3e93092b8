"""The node-local checkpoint store: one actor per node, started by the model manager.

Tiers, slowest first: the model's source (a folder or hub id) → local disk in the
sllm-store format (``<data_dir>/store/<key>``) → DRAM (shared memory under a byte budget,
least recently used out). ``prepare`` converts a model and prefetches it into DRAM in the
background, logging progress; ``locate`` answers at once with the fastest tier that holds
it, which is all a starting replica waits for. The actor restarts if it dies and finds
its disk tier again, under a new ``instance`` in its report: the manager then asks it to
prefetch again what it held in DRAM or was preparing (``NodeServices.refresh``).

A checkpoint missing on a node is copied from a peer's store when one holds it (a Ray
streaming call between the two stores, in ``COPY_CHUNK_BYTES`` pieces), and converted
from the source only when none does: a model is read from its source once per cluster
(the manager prepares it on one node first, then on the others).

A model has two kinds of copies here: the converted checkpoint, with Hugging Face names,
which any engine can load; and, once an engine has loaded it, that engine's layout
(``<key>.<layout>``, written by the load format in ``store_loader``), which later engines
with the same layout use in place. Once a layout exists it is what goes into DRAM. An
engine that finds the stored layout does not fit its parameters writes a new one over it;
``prepare`` then replaces the DRAM copy of the old one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ray

from sllm_ray.log_setup import ProgressLog, configure_logging
from sllm_ray.names import (
    NODE_PREFIX,
    checkpoint_key,
    dram_folder,
    dram_folder_node,
    layout_key,
    named_actor,
    store_name,
)
from sllm_ray.store.adapter_tier import AdapterLocation, AdapterTier
from sllm_ray.store.bandwidth import measure
from sllm_ray.store.checkpoint_format import (
    INDEX_FILE,
    CheckpointError,
    check_complete,
    data_bytes,
    rank_dir,
    read_index,
)
from sllm_ray.store.convert import PARTIAL, convert
from sllm_ray.store.dram_tier import BudgetError, DramTier
from sllm_ray.store.locate import DISK, DRAM, SOURCE, CheckpointLocation

logger = logging.getLogger(__name__)

COPY_CHUNK_BYTES = 64 << 20
# The folder of the LoRA adapters in each tier (no checkpoint key looks like it).
ADAPTERS = "adapters"
# The share of ``store_dram_bytes`` the node's LoRA adapters may hold in DRAM, beside the
# checkpoints' budget (a rank-16 adapter of an 8B model is about 50 MB).
ADAPTER_DRAM_SHARE = 0.1


def _local_source(source: str) -> Path:
    path = Path(source)
    if path.is_dir():
        return path
    # A hub id: the files Hugging Face's cache already holds or downloads now.
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))


def remove_stale_dram(app: str, parent: Path, alive_node_ids: set[str]) -> None:
    """Free what the app's stores on nodes that no longer exist left in shared memory: a
    tmpfs outlives Ray, and each Ray start gives a node a new id (so a new folder)."""
    alive = {node_id[:NODE_PREFIX] for node_id in alive_node_ids}
    for folder in parent.glob("*") if parent.is_dir() else ():
        node = dram_folder_node(app, folder.name)
        if node is not None and node not in alive:
            logger.info("store: removing the DRAM tier a previous store left in %s", folder)
            shutil.rmtree(folder, ignore_errors=True)


class CheckpointStore:
    def __init__(
        self,
        app: str,
        node_id: str,
        disk_root: str,
        dram_parent: str,
        dram_budget_bytes: int,
        alive_node_ids: set[str],
    ) -> None:
        configure_logging()
        self._app = app
        self._node_id = node_id
        self._instance = uuid.uuid4().hex
        self._disk_root = Path(disk_root)
        self._disk_root.mkdir(parents=True, exist_ok=True)
        remove_stale_dram(app, Path(dram_parent), alive_node_ids | {node_id})
        self._dram = DramTier(Path(dram_parent) / dram_folder(app, node_id), dram_budget_bytes)
        self._bandwidth = measure(self._disk_root, self._dram.root)
        self._adapters = AdapterTier(
            self._disk_root / ADAPTERS,
            self._dram.root / ADAPTERS,
            int(dram_budget_bytes * ADAPTER_DRAM_SHARE),
        )
        self._jobs: dict[str, asyncio.Task[dict[str, Any]]] = {}
        self._queued: dict[str, int] = {}  # key being prepared -> bytes still to move
        self._origins: dict[str, str] = {}  # key -> where this store got it: source, node id
        for partial in self._disk_root.glob(f"*{PARTIAL}*"):  # writes a crash cut short
            shutil.rmtree(partial, ignore_errors=True)
        logger.info(
            "checkpoint store on node %s: %d checkpoints on disk; GB/s: %s",
            node_id,
            len(self._disk()),
            {k: round(v / 1e9, 2) for k, v in self._bandwidth.items()},
        )

    def _disk_dir(self, key: str) -> Path:
        return self._disk_root / key

    def _on_disk(self, key: str) -> bool:
        """Whether the disk tier holds a whole copy; a damaged one is removed (and made
        again by the next ``prepare``), so no engine is pointed at it."""
        directory = rank_dir(self._disk_dir(key))
        if not (directory / INDEX_FILE).exists():
            return False
        try:
            check_complete(directory, read_index(directory))
        except CheckpointError as exc:
            logger.error("store: removing damaged checkpoint %s: %s", key, exc)
            self._dram.evict(key)
            shutil.rmtree(self._disk_dir(key), ignore_errors=True)
            return False
        return True

    def _disk(self) -> dict[str, int]:
        """Whole-looking checkpoints on disk and their sizes."""
        return {
            p.name: data_bytes(rank_dir(p))
            for p in self._disk_root.iterdir()
            if PARTIAL not in p.name and (rank_dir(p) / INDEX_FILE).exists()
        }

    def locate(
        self, model: str, source: str, layout: str | None = None, prepare: bool = True
    ) -> CheckpointLocation:
        """The fastest tier holding the model now and the load format's
        ``model_loader_extra_config`` naming its copies (``store_loader``); with
        ``prepare``, starts preparing it in the background when what the engine would best
        load is not in DRAM yet. A caller that may not load at all (a replica asking
        before it knows whether its host holds a sleeping engine) passes ``prepare=False``
        and calls ``prepare`` once it did load: an evicted checkpoint is not brought back
        into DRAM for nothing."""
        key = checkpoint_key(model, source)
        if key not in self._dram and not self._on_disk(key):
            if prepare:
                self._start_prepare(model, source, layout)
            return CheckpointLocation(SOURCE)
        weights = {"checkpoint": str(self._disk_dir(key))}
        best = key
        if layout is not None:
            lkey = layout_key(model, source, layout)
            weights["layout_dir"] = str(self._disk_dir(lkey))
            # Where the engine writes its layout, for the next one: when there is none
            # yet, or the stored one does not fit it (then it is replaced).
            weights["layout_staging"] = f"{weights['layout_dir']}{PARTIAL}-{uuid.uuid4().hex[:8]}"
            if lkey in self._dram or self._on_disk(lkey):
                best = lkey
        # A DRAM copy of a disk copy that was replaced since is not handed out: ``prepare``
        # replaces it.
        if self._dram.get(best, self._disk_dir(best)) is None:
            if prepare:
                self._start_prepare(model, source, layout)
            return CheckpointLocation(DISK, weights)
        weights["dram_dir" if best == key else "layout_dram_dir"] = str(self._dram.folder(best))
        return CheckpointLocation(DRAM, weights)

    def _start_prepare(self, model: str, source: str, layout: str | None) -> asyncio.Task[dict[str, Any]]:
        key = checkpoint_key(model, source)
        job = self._jobs.get(key)
        if job is None or job.done():
            job = asyncio.get_running_loop().create_task(self._prepare(model, source, layout))
            self._jobs[key] = job
        return job

    async def prepare(self, model: str, source: str, layout: str | None = None) -> dict[str, Any]:
        """Convert the model to the disk tier if needed, then prefetch into DRAM its
        ``layout`` when one was written, else the converted checkpoint."""
        return await asyncio.shield(self._start_prepare(model, source, layout))

    async def _prepare(self, model: str, source: str, layout: str | None) -> dict[str, Any]:
        started = time.monotonic()
        key = checkpoint_key(model, source)
        if not self._on_disk(key) and not await self._copy_from_peer(key):
            logger.info("store: converting %s from %s", model, source)
            local = await asyncio.to_thread(_local_source, source)
            self._queued[key] = sum(p.stat().st_size for p in local.glob("*.safetensors"))
            try:
                await asyncio.to_thread(convert, local, self._disk_dir(key))
            finally:
                del self._queued[key]
            self._origins[key] = SOURCE
        if layout is not None and self._on_disk(layout_key(model, source, layout)):
            key = layout_key(model, source, layout)
        try:
            await asyncio.to_thread(self._dram.put, key, self._disk_dir(key))
            tier = DRAM
        except BudgetError as exc:
            logger.warning("store: %s stays on disk: %s", model, exc)
            tier = DISK
        size = data_bytes(rank_dir(self._disk_dir(key)))
        logger.info(
            "store: %s ready in %s tier as %s (%.1f MB, %.2f s)",
            model,
            tier,
            key,
            size / 1e6,
            time.monotonic() - started,
        )
        return {"model": model, "key": key, "tier": tier, "bytes": size}

    async def adapter(self, name: str, source: str) -> AdapterLocation:
        """Where an engine on this node loads the LoRA adapter ``name`` from: its DRAM copy
        (copied in from the source, then from disk, the first time), or the disk copy when
        DRAM has no room for it."""
        key = checkpoint_key(name, source)
        if not self._adapters.on_disk(key):
            logger.info("store: copying adapter %s from %s", name, source)
            local = await asyncio.to_thread(_local_source, source)
            await asyncio.to_thread(self._adapters.copy_in, key, local)
        return await asyncio.to_thread(self._adapters.locate, key)

    def disk_bytes(self, key: str) -> int | None:
        """The size of a whole disk copy of ``key`` here, or None (a peer asking)."""
        return data_bytes(rank_dir(self._disk_dir(key))) if self._on_disk(key) else None

    async def read(self, key: str) -> AsyncIterator[tuple[str, bytes]]:
        """Every file of the disk copy of ``key``, as (relative path, piece) in order: a
        peer's store copies it from here (streamed through Ray's object store)."""
        folder = self._disk_dir(key)
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = str(path.relative_to(folder))
            with open(path, "rb") as f:
                yield relative, b""  # the file exists even when it is empty
                while piece := await asyncio.to_thread(f.read, COPY_CHUNK_BYTES):
                    yield relative, piece

    def _peers(self) -> list[tuple[str, Any]]:
        """(node id, store) of this app's stores on the other live nodes (none outside Ray)."""
        peers: list[tuple[str, Any]] = []
        for node in ray.nodes() if ray.is_initialized() else ():
            if node["Alive"] and node["NodeID"] != self._node_id:
                try:
                    store = named_actor(store_name(self._app, node["NodeID"]))
                except ValueError:
                    continue
                peers.append((node["NodeID"], store))
        return peers

    async def _copy_from_peer(self, key: str) -> bool:
        """Copy ``key`` from the first peer store that holds it; False when none does."""
        peers = self._peers()
        sizes = await asyncio.gather(*(p.disk_bytes.remote(key) for _, p in peers), return_exceptions=True)
        holders = [(*peer, size) for peer, size in zip(peers, sizes, strict=True) if isinstance(size, int)]
        for peer_node, peer, size in holders:
            staging = self._disk_root / f"{key}{PARTIAL}-copy"
            shutil.rmtree(staging, ignore_errors=True)
            self._queued[key] = size
            started = time.monotonic()
            progress = ProgressLog(logger, f"store: copying {key} from node {peer_node}", size)
            try:
                async for ref in peer.read.options(num_returns="streaming").remote(key):
                    relative, piece = await ref
                    progress.advance(len(piece))
                    path = staging / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "ab") as f:
                        f.write(piece)
                check_complete(rank_dir(staging), read_index(rank_dir(staging)))
                staging.rename(self._disk_dir(key))
            except (ray.exceptions.RayError, OSError, CheckpointError) as exc:
                logger.warning("store: copying %s from a peer failed (%s): trying the next", key, exc)
                shutil.rmtree(staging, ignore_errors=True)
                continue
            finally:
                self._queued.pop(key, None)
            seconds = time.monotonic() - started
            self._bandwidth["network"] = size / max(seconds, 1e-6)
            self._origins[key] = peer_node
            logger.info(
                "store: copied %s (%.1f MB) from node %s in %.2f s", key, size / 1e6, peer_node, seconds
            )
            return True
        return False

    def forget(self, model: str, source: str) -> None:
        """Drop the model and its engine layouts from DRAM (the disk copies stay for a
        later registration)."""
        key = checkpoint_key(model, source)
        for held in self._dram.cached():
            if held == key or held.startswith(f"{key}."):
                self._dram.evict(held)

    def close(self) -> None:
        """Free this node's DRAM tier before the store is stopped (``NodeServices.close``)."""
        self._dram.close()
        logger.info("checkpoint store on node %s: DRAM tier freed", self._node_id)

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self._node_id,
            "instance": self._instance,
            "dram": {
                "budget_bytes": self._dram.budget_bytes,
                "used_bytes": self._dram.used_bytes,
                "checkpoints": self._dram.cached(),
                "evictions": self._dram.evictions,
            },
            "disk": self._disk(),
            "bandwidth": self._bandwidth,
            "queued_bytes": sum(self._queued.values()),
            "origins": dict(self._origins),
            "preparing": sorted(k for k, job in self._jobs.items() if not job.done()),
            "adapters": self._adapters.status(),
        }
