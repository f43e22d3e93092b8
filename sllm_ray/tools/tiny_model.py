"""Build a tiny Llama checkpoint locally: random weights, a locally trained tokenizer.

The demo and the tests need a real Hugging Face model folder that vLLM can serve, and
nothing may be downloaded, so the project makes its own. It answers gibberish, but every
layer of the stack (tokenizer, chat template, sampling, streaming) runs for real.

    python -m sllm_ray.tools.tiny_model models/tiny-llama
"""

from __future__ import annotations

import argparse
import json
import logging
import pydoc
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

# Special tokens of the chat template; "<|end|>" doubles as end-of-sequence.
SPECIAL_TOKENS = ["<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Modules whose docstrings make the tokenizer's training text: always present, so the
# tokenizer comes out the same on every machine with the same Python.
_CORPUS_MODULES = ["os", "json", "asyncio", "logging", "argparse", "pathlib", "re", "typing"]
_MARKER = "sllm_tiny_model.json"


def _corpus() -> list[str]:
    lines: list[str] = []
    for name in _CORPUS_MODULES:
        lines.extend(pydoc.render_doc(name, renderer=pydoc.plaintext).splitlines())
    return [line for line in lines if line.strip()]


def _train_tokenizer(vocab_size: int):  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def make_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 256,
    vocab_size: int = 1024,
    seed: int = 0,
) -> Path:
    """Write a random-weight LlamaForCausalLM with its tokenizer to ``out_dir``.

    Idempotent: an existing folder made with the same settings is left alone. The head
    dimension (hidden_size / num_heads) must be one vLLM's CPU attention supports (32+).
    """
    out = Path(out_dir)
    settings = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "intermediate_size": intermediate_size,
        "vocab_size": vocab_size,
        "seed": seed,
    }
    marker = out / _MARKER
    if marker.exists() and json.loads(marker.read_text()) == settings:
        return out

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps(settings))
    logger.info("wrote tiny model to %s", out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the model into")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = make_tiny_model(
        args.out_dir,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        intermediate_size=args.intermediate_size,
        vocab_size=args.vocab_size,
        seed=args.seed,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
