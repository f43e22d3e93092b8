"""LoRA adapters on a base model: checked when registered, so a wrong one is a 422 naming
the field then, not a request failing in a replica later.

An adapter is a folder in PEFT's layout (``adapter_config.json`` and ``adapter_model.
safetensors`` or ``.bin``) inside the model roots, or a Hugging Face id (checked by vLLM
when a replica first loads it). Pure logic over files: no vLLM, no Ray.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sllm_ray.config import AdapterConfig, ModelConfig
from sllm_ray.control.sources import SourceError, SourceNotFound, inside_roots, is_hub_id

# vLLM's own default of ``max_lora_rank`` (``LoRAConfig``, 0.32), used when the base sets none.
DEFAULT_MAX_LORA_RANK = 16
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# A safetensors header is a JSON object after its 8-byte length; larger is not a checkpoint.
MAX_HEADER_BYTES = 100 * 1024**2


def lora_ready(base: ModelConfig) -> None:
    """A base whose engines can take adapters (vLLM's ``enable_lora``), else a ``SourceError``
    naming the base's field."""
    if base.pooling:
        raise SourceError(f"model `{base.model}` runs vLLM's pooling runner: it serves no adapters", "model")
    if not base.engine_kwargs.get("enable_lora"):
        raise SourceError(
            f"model `{base.model}` is not registered with engine_kwargs.enable_lora: true "
            "(vLLM's LoRA support; max_lora_rank and max_loras size it)",
            "engine_kwargs.enable_lora",
        )


def _module_names(folder: Path) -> set[str]:
    """The module paths of a checkpoint's weights (``model.layers.0.self_attn.q_proj``), from
    its safetensors headers."""
    names: set[str] = set()
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > MAX_HEADER_BYTES:
                continue
            header = json.loads(file.read(length))
        names.update(key.rsplit(".", 1)[0] for key in header if key != "__metadata__")
    return names


def _missing_targets(targets: str | Sequence[str], modules: set[str]) -> list[str]:
    """The adapter's target modules (PEFT's ``target_modules``: names matched as the last
    parts of a module path, or one regular expression) the base has none of."""
    if isinstance(targets, str):
        pattern = re.compile(targets)
        return [] if any(pattern.fullmatch(m) for m in modules) else [targets]
    return [t for t in targets if not any(m == t or m.endswith("." + t) for m in modules)]


def _read_config(folder: Path, source: str) -> dict[str, Any]:
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except FileNotFoundError:
        raise SourceError(
            f"adapter folder {source!r} has no {ADAPTER_CONFIG} (PEFT's layout)", "source"
        ) from None
    except (OSError, ValueError) as exc:
        raise SourceError(
            f"adapter folder {source!r}: {ADAPTER_CONFIG} is not JSON ({exc})", "source"
        ) from None
    if not isinstance(config, dict):
        raise SourceError(f"adapter folder {source!r}: {ADAPTER_CONFIG} is not a JSON object", "source")
    return config


def checked_adapter(
    adapter: AdapterConfig, base: ModelConfig, roots: Sequence[str | Path], *, allow_hub: bool, base_dir: Path
) -> AdapterConfig:
    """The adapter with its source resolved (an absolute folder, or a hub id), once it fits
    the base: in PEFT's layout, its rank within the base's ``max_lora_rank``, its target
    modules among the base's (a base in a local folder). Else ``SourceError`` naming the field."""
    lora_ready(base)
    if adapter.adapter == base.model:
        raise SourceError(f"an adapter cannot take its base's name `{base.model}`", "adapter")
    source = adapter.source
    if is_hub_id(source, roots, base_dir):
        if not allow_hub:
            raise SourceError("hub ids are disabled here (allow_hub_models: false)", "source")
        return adapter
    folder = inside_roots(source, roots, base_dir, "source")
    if not folder.is_dir():
        raise SourceNotFound(f"adapter folder {source!r} does not exist", "source")
    config = _read_config(folder, source)
    if not any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
        raise SourceError(
            f"adapter folder {source!r} has no weights ({' or '.join(ADAPTER_WEIGHTS)})", "source"
        )
    rank, limit = config.get("r"), base.engine_kwargs.get("max_lora_rank", DEFAULT_MAX_LORA_RANK)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise SourceError(
            f"adapter {adapter.adapter!r}: {ADAPTER_CONFIG} has no rank `r`", "adapter_config.r"
        )
    if rank > limit:
        raise SourceError(
            f"adapter {adapter.adapter!r} has rank {rank}, above model `{base.model}`'s "
            f"engine_kwargs.max_lora_rank ({limit})",
            "adapter_config.r",
        )
    targets = config.get("target_modules")
    base_folder = Path(base.model_source)
    modules = _module_names(base_folder) if targets and base_folder.is_dir() else set()
    if modules and (missing := _missing_targets(targets, modules)):
        raise SourceError(
            f"adapter {adapter.adapter!r} targets modules model `{base.model}` does not have: {missing}",
            "adapter_config.target_modules",
        )
    return adapter.model_copy(update={"source": str(folder)})
