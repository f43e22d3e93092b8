"""vLLM load format ``sllm_store``: weights from the node-local checkpoint store.

Registered in every vLLM process through the ``vllm.general_plugins`` entry point (vLLM
runs plugins in each worker it starts); vLLM's loader API is reached through
``vllm_compat``, whose import costs a plugin process about 0.6 s more than the loader
modules alone. The store names the checkpoint in ``model_loader_extra_config``
(``CheckpointStore.locate`` builds it):

- ``checkpoint``: the disk copy with Hugging Face names (and the config files);
- ``dram_dir``: optional, that checkpoint's folder in the DRAM tier (``rank_0.bin``);
- ``layout_dir`` / ``layout_dram_dir``: the engine layout, on disk and in DRAM: one rank
  per model worker, tensors named and shaped as this vLLM's model holds them, after
  fusing and sharding (ServerlessLLM's vLLM format is the same idea). When it exists the
  weights are used where they lie: a CPU model's parameters become copy-on-write views of
  the DRAM tier (nothing read, nothing copied); a GPU model copies them from pinned memory.
- ``layout_staging``: when the engine layout does not exist yet, or the stored one does
  not fit this engine's parameters (``layout_mismatch``), the weights loaded by name are
  written there, and the folder becomes ``layout_dir`` once every rank has been written
  (replacing the stale one). The engine's report then says ``layout_written`` and its
  replica asks the store to cache the new layout in DRAM; the next engine of this layout
  loads in place.

Each load leaves its ``LoadReport`` on the model it loaded (``REPORT_ATTR``); the engine
collects them from every worker (``worker_load_report`` through vLLM's collective call),
so the report comes back with the engine build, in-process or from Ray workers alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from typing import Any

from sllm_ray.engine.records import LoadReport
from sllm_ray.store.checkpoint_format import (
    INDEX_FILE,
    CheckpointError,
    load_rank,
    rank_dir,
    read_index,
    save_rank,
)
from sllm_ray.store.convert import PARTIAL
from sllm_ray.store.dram_tier import CachedRank, prefault, rank_file

logger = logging.getLogger(__name__)

LOAD_FORMAT = "sllm_store"
HF_NAMES, ENGINE_LAYOUT = "hf_names", "engine_layout"

# The model attribute holding its load's ``LoadReport``.
REPORT_ATTR = "sllm_load_report"


def worker_load_report(worker: Any) -> dict[str, Any] | None:
    """Run in each model worker (vLLM's ``collective_rpc``): its load's report, as JSON."""
    report = getattr(worker.get_model(), REPORT_ATTR, None)
    return report.to_json() if isinstance(report, LoadReport) else None


def pin_for_gpu(buffer: Any) -> bool:
    """GPU path, untested on GPUs: register the mapped DRAM tier as page-locked memory
    (CUDA's ``cudaHostRegister``, through torch), so copies to the GPU run as DMA from it
    without a pageable bounce. Returns whether it was pinned."""
    import torch

    if not torch.cuda.is_available() or buffer.numel() == 0:
        return False
    status = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0)
    if int(status) != 0:
        logger.warning("could not pin the DRAM tier for the GPU (cudaError %s): pageable copies", int(status))
        return False
    return True


def _rank_tensors(
    checkpoint: str, dram_dir: object, rank: int, device_type: str
) -> tuple[dict[str, Any], str]:
    """One rank's tensors: views of its DRAM-tier file when there is one, else read from disk."""
    dram_file = rank_file(dram_dir, rank) if isinstance(dram_dir, str) else None
    if dram_file is not None and dram_file.exists():
        cached = CachedRank(str(dram_file), read_index(rank_dir(checkpoint, rank)))
        buffer = cached.buffer()
        if device_type == "cuda":
            pin_for_gpu(buffer)
        else:  # map the pages now, in parallel, rather than fault them in one by one later
            prefault(buffer)
        return cached.tensors(buffer), "dram"
    return load_rank(rank_dir(checkpoint, rank)), "disk"


def store_tensors(extra: Mapping[str, object], device_type: str = "cpu") -> tuple[dict[str, Any], str]:
    """The checkpoint's tensors by Hugging Face name, and the tier they came from."""
    checkpoint = extra.get("checkpoint")
    if not isinstance(checkpoint, str):
        raise ValueError(f"load_format={LOAD_FORMAT} needs model_loader_extra_config.checkpoint")
    return _rank_tensors(checkpoint, extra.get("dram_dir"), 0, device_type)


def layout_tensors(
    extra: Mapping[str, object], rank: int, device_type: str = "cpu"
) -> tuple[dict[str, Any], str] | None:
    """This worker's rank of the engine layout, or None when the store has none."""
    layout_dir = extra.get("layout_dir")
    if not isinstance(layout_dir, str) or not (rank_dir(layout_dir, rank) / INDEX_FILE).exists():
        return None
    return _rank_tensors(layout_dir, extra.get("layout_dram_dir"), rank, device_type)


def layout_mismatch(tensors: Mapping[str, Any], params: Mapping[str, Any]) -> str | None:
    """Why a stored engine layout cannot stand in for these parameters, or None."""
    if set(tensors) != set(params):
        return f"names differ: {sorted(set(tensors) ^ set(params))[:5]}"
    for name, param in params.items():
        stored = tensors[name]
        if stored.shape != param.shape or stored.dtype != param.dtype:
            return (
                f"{name}: stored {stored.dtype}{list(stored.shape)}, model {param.dtype}{list(param.shape)}"
            )
    return None


def assign_in_place(tensors: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Give each parameter its stored tensor: on a CPU the stored memory itself (a
    copy-on-write view), on a GPU an asynchronous copy from pinned memory (untested on GPUs)."""
    import torch

    on_gpu = False
    for name, param in params.items():
        if param.device.type == "cpu":
            param.data = tensors[name]
        else:
            param.data.copy_(tensors[name], non_blocking=True)
            on_gpu = True
    if on_gpu:
        torch.cuda.synchronize()


def save_layout(
    tensors: Mapping[str, Any],
    staging: str,
    layout_dir: str,
    rank: int,
    world_size: int,
    replace: bool = False,
) -> bool:
    """Write this rank of the engine layout; the rank that completes the set publishes it
    as ``layout_dir`` (a rename, so readers never see a partial layout) and returns True.
    ``replace``: the stored layout did not fit, so it is renamed away first (and removed)
    instead of being kept as another engine's. A failed write only costs the next engine
    its in-place load: it is logged, not raised."""
    started = time.perf_counter()
    try:
        save_rank(tensors, rank_dir(staging, rank))
    except (OSError, CheckpointError) as exc:
        logger.warning("could not write the engine layout to %s: %s", staging, exc)
        shutil.rmtree(staging, ignore_errors=True)
        return False
    if not all((rank_dir(staging, r) / INDEX_FILE).exists() for r in range(world_size)):
        return False
    stale = f"{layout_dir}{PARTIAL}-stale-{uuid.uuid4().hex[:8]}"
    if replace:
        with contextlib.suppress(FileNotFoundError):  # another engine moved it away first
            os.rename(layout_dir, stale)
    try:
        os.rename(staging, layout_dir)
    except OSError:  # another engine published this layout first
        shutil.rmtree(staging, ignore_errors=True)
        return False
    finally:
        shutil.rmtree(stale, ignore_errors=True)
    how = "replaced the stale" if replace else "wrote the"
    logger.info("%s engine layout %s in %.2f s", how, layout_dir, time.perf_counter() - started)
    return True


def register() -> None:
    """The ``vllm.general_plugins`` entry point."""
    from sllm_ray.engine import vllm_compat

    vllm_compat.register_model_loader(LOAD_FORMAT, load_weights)


def load_weights(extra: dict[str, Any], model: Any) -> None:
    """Fill ``model``'s parameters from the store (``extra`` is the load's
    ``model_loader_extra_config``) and leave the load's report on it."""
    from sllm_ray.engine import vllm_compat

    started = time.perf_counter()
    params = dict(model.named_parameters())
    device_type = next(iter(params.values())).device.type
    rank, world_size = vllm_compat.weights_rank()
    found = layout_tensors(extra, rank, device_type)
    stale = False
    if found is not None and (why_not := layout_mismatch(found[0], params)) is not None:
        logger.warning(
            "stored engine layout does not fit this model (%s): loading by name, and replacing it", why_not
        )
        found, stale = None, True
    if found is not None:
        tensors, tier = found
        assign_in_place(tensors, params)
        layout = ENGINE_LAYOUT
    else:
        tensors, tier = store_tensors(extra, device_type)
        loaded = model.load_weights(iter(tensors.items()))
        missing = set(params) - set(loaded or ())
        if loaded is not None and missing:
            raise ValueError(f"checkpoint lacks weights for {sorted(missing)[:5]}")
        layout = HF_NAMES
    seconds = time.perf_counter() - started
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    logger.info(
        "loaded %d tensors (%s) from the store's %s tier in %.3f s", len(tensors), layout, tier, seconds
    )
    written = False
    if layout == HF_NAMES and "layout_staging" in extra and "layout_dir" in extra:
        # Now, before process_weights_after_loading repacks or rewrites them in place:
        # the layout is what an engine holds between the two, where the next one puts it
        # back. Once per model, layout and node (again when the stored one does not fit).
        owned = {name: p.data for name, p in params.items()}
        staging, layout_dir = str(extra["layout_staging"]), str(extra["layout_dir"])
        written = save_layout(owned, staging, layout_dir, rank, world_size, replace=stale)
    setattr(model, REPORT_ATTR, LoadReport(tier, layout, seconds, size, time.time(), written))
