"""LoRA adapters checked at registration: PEFT's layout, rank, target modules, roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sllm_ray.config import AdapterConfig, ModelConfig
from sllm_ray.control.adapters import checked_adapter
from sllm_ray.control.sources import SourceError
from sllm_ray.tools.tiny_lora import make_tiny_lora


@pytest.fixture(scope="module")
def base(tiny_model_dir: Path) -> ModelConfig:
    return ModelConfig(
        model="base",
        model_source=str(tiny_model_dir),
        engine_kwargs={"enable_lora": True, "max_lora_rank": 8},
    )


def _check(adapter_dir: Path, base: ModelConfig, roots: list[Path] | None = None) -> AdapterConfig:
    adapter = AdapterConfig(adapter="fine", source=str(adapter_dir))
    roots = roots if roots is not None else [adapter_dir.parent, Path(base.model_source).parent]
    return checked_adapter(adapter, base, roots, allow_hub=True, base_dir=Path.cwd())


def _param(adapter_dir: Path, base: ModelConfig, **kwargs: object) -> str:
    with pytest.raises(SourceError) as info:
        _check(adapter_dir, base, **kwargs)  # type: ignore[arg-type]
    return info.value.param


def test_a_peft_folder_that_fits_is_taken_resolved(tmp_path: Path, base: ModelConfig) -> None:
    folder = make_tiny_lora(base.model_source, tmp_path / "lora", rank=8)
    assert _check(folder, base).source == str(folder.resolve())


def test_a_source_outside_the_roots(tmp_path: Path, base: ModelConfig) -> None:
    folder = make_tiny_lora(base.model_source, tmp_path / "lora")
    assert _param(folder, base, roots=[Path(base.model_source).parent]) == "source"


def test_a_folder_without_peft_files(tmp_path: Path, base: ModelConfig) -> None:
    folder = make_tiny_lora(base.model_source, tmp_path / "lora")
    (folder / "adapter_model.safetensors").unlink()
    assert _param(folder, base) == "source"  # no weights
    (folder / "adapter_config.json").unlink()
    assert _param(folder, base) == "source"  # no config


def test_a_rank_above_the_bases_max_lora_rank(tmp_path: Path, base: ModelConfig) -> None:
    folder = make_tiny_lora(base.model_source, tmp_path / "lora", rank=16)
    with pytest.raises(SourceError, match=r"rank 16.*max_lora_rank \(8\)") as info:
        _check(folder, base)
    assert info.value.param == "adapter_config.r"


def test_target_modules_the_base_lacks(tmp_path: Path, base: ModelConfig) -> None:
    folder = make_tiny_lora(base.model_source, tmp_path / "lora", targets=("q_proj", "c_attn"))
    with pytest.raises(SourceError, match="c_attn") as info:
        _check(folder, base)
    assert info.value.param == "adapter_config.target_modules"
    config = json.loads((folder / "adapter_config.json").read_text())
    config["target_modules"] = r".*\.(q|v)_proj"  # PEFT's regular-expression form matches
    (folder / "adapter_config.json").write_text(json.dumps(config))
    assert _check(folder, base).adapter == "fine"


def test_a_base_without_enable_lora(tmp_path: Path, base: ModelConfig) -> None:
    folder = make_tiny_lora(base.model_source, tmp_path / "lora")
    plain = base.model_copy(update={"engine_kwargs": {}})
    assert _param(folder, plain) == "engine_kwargs.enable_lora"
    pooling = base.model_copy(update={"engine_kwargs": {"runner": "pooling", "enable_lora": True}})
    assert _param(folder, pooling) == "model"


def test_adapter_names_are_unique_and_model_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        ModelConfig(
            model="m",
            model_source="s",
            adapters=[{"adapter": "a", "source": "x"}, {"adapter": "a", "source": "y"}],
        )
    with pytest.raises(ValueError, match="model names"):
        AdapterConfig(adapter="../a", source="x")
