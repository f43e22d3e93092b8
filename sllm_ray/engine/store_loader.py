"""vLLM load format ``sllm_store``: weights from the node-local checkpoint store.

Registered in every vLLM process through the ``vllm.general_plugins`` entry point (vLLM
runs plugins in each worker it starts). ``register`` imports vLLM's loader API itself
rather than through ``vllm_compat``: plugins load early in every vLLM process, where the
serving layer ``vllm_compat`` brings in is not wanted. The engine names the checkpoint in
``model_loader_extra_config``:

- ``checkpoint``: the store's local-disk copy (sllm-store format, Hugging Face names);
- ``dram_file``: optional, that checkpoint's rank file in the store's DRAM tier. When it
  exists the weights are views of shared memory: nothing is read from disk and the only
  copy is the one into the model's own parameters (on a GPU, the host-to-device copy).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from sllm_ray.store.checkpoint_format import load_rank, rank_dir, read_index
from sllm_ray.store.dram_tier import CachedRank

logger = logging.getLogger(__name__)

LOAD_FORMAT = "sllm_store"

# The last load in this process: an engine host reports it as the "weights loaded" phase.
LAST_LOAD: dict[str, object] = {}


def pin_for_gpu(buffer: Any) -> bool:
    """GPU path, untested on GPUs: register the mapped DRAM tier as page-locked memory
    (CUDA's ``cudaHostRegister``, through torch), so the weight loaders' copies to the
    GPU run as DMA from it without a pageable bounce. Returns whether it was pinned."""
    import torch

    if not torch.cuda.is_available() or buffer.numel() == 0:
        return False
    status = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0)
    if int(status) != 0:
        logger.warning("could not pin the DRAM tier for the GPU (cudaError %s): pageable copies", int(status))
        return False
    return True


def store_tensors(extra: dict[str, object], device_type: str = "cpu") -> tuple[dict[str, object], str]:
    """The checkpoint's tensors and the tier they came from."""
    checkpoint = extra.get("checkpoint")
    if not isinstance(checkpoint, str):
        raise ValueError(f"load_format={LOAD_FORMAT} needs model_loader_extra_config.checkpoint")
    dram_file = extra.get("dram_file")
    if isinstance(dram_file, str) and os.path.exists(dram_file):
        rank = CachedRank(dram_file, read_index(rank_dir(checkpoint)))
        buffer = rank.buffer()
        if device_type == "cuda":
            pin_for_gpu(buffer)
        return rank.tensors(buffer), "dram"
    return load_rank(rank_dir(checkpoint)), "disk"


def register() -> None:
    """The ``vllm.general_plugins`` entry point."""
    import torch
    from vllm.model_executor.model_loader import register_model_loader
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    @register_model_loader(LOAD_FORMAT)
    class StoreLoader(BaseModelLoader):
        def download_model(self, model_config: object) -> None:
            pass  # the store holds the checkpoint before an engine is asked to load it

        def load_weights(self, model: torch.nn.Module, model_config: object) -> None:
            started = time.perf_counter()
            device_type = next(model.parameters()).device.type
            tensors, tier = store_tensors(dict(self.load_config.model_loader_extra_config), device_type)
            loaded = model.load_weights(iter(tensors.items()))
            missing = {n for n, _ in model.named_parameters()} - set(loaded or ())
            if loaded is not None and missing:
                raise ValueError(f"checkpoint lacks weights for {sorted(missing)[:5]}")
            LAST_LOAD.update(tier=tier, seconds=time.perf_counter() - started, finished_at=time.time())
            logger.info(
                "loaded %d tensors from the store's %s tier in %.3f s",
                len(tensors),
                tier,
                time.perf_counter() - started,
            )
