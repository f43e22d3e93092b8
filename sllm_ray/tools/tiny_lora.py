"""Make a random LoRA adapter in PEFT's layout for a local Llama-shaped checkpoint.

The tests and the adapter benchmark need adapters vLLM loads, and nothing may be
downloaded: this writes ``adapter_config.json`` and ``adapter_model.safetensors`` as PEFT
saves them, with random A and nonzero B matrices, so the adapter changes the model's
answers (PEFT's own initialization sets B to zero: an adapter that changes nothing).

    python -m sllm_ray.tools.tiny_lora models/tiny-llama models/lora-a --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Projections of a Llama decoder layer: (module path under the layer, input, output) sizes
# by the config's names.
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = ("q_proj", "v_proj")


def _shape(module: str, config: dict) -> tuple[int, int]:
    """(in, out) features of a Llama projection."""
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads) * head_dim
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv),
        "v_proj": (hidden, kv),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inner),
        "up_proj": (hidden, inner),
        "down_proj": (inner, hidden),
    }[module]


def make_tiny_lora(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    rank: int = 8,
    alpha: int = 16,
    targets: tuple[str, ...] = DEFAULT_TARGETS,
    scale: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write a random LoRA adapter for the checkpoint in ``base_dir`` to ``out_dir``.

    ``scale``: the standard deviation of A's and B's entries (large enough that the tiny
    model's greedy answers change). ``targets`` are written as given into the config, so
    an adapter for modules the base lacks can be made too (its tensors: for those it has)."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((Path(base_dir) / "config.json").read_text())
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(config["num_hidden_layers"]):
        for module in targets:
            if module not in _ATTENTION + _MLP:
                continue
            part = "self_attn" if module in _ATTENTION else "mlp"
            fan_in, fan_out = _shape(module, config)
            prefix = f"base_model.model.model.layers.{layer}.{part}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) * scale
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * scale
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base_dir),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": list(targets),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_dir", help="the base model's folder (its config.json)")
    parser.add_argument("out_dir", help="folder to write the adapter into")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_tiny_lora(
        args.base_dir,
        args.out_dir,
        rank=args.rank,
        alpha=args.alpha,
        targets=tuple(args.targets),
        seed=args.seed,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
