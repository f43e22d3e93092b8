"""Which model sources are accepted: folders inside the allowed roots, or hub ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from sllm_ray.control.sources import SourceError, resolve_source


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"")
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    model_folder(tmp_path / "models" / "a")
    model_folder(tmp_path / "elsewhere" / "b")
    return tmp_path


def test_relative_and_absolute_folders_resolve_inside_roots(base: Path) -> None:
    expected = str((base / "models" / "a").resolve())
    assert resolve_source("models/a", ["models"], base=base) == expected
    assert resolve_source(expected, ["models"], base=base) == expected


def test_hub_ids_pass_through(base: Path) -> None:
    assert resolve_source("meta-llama/Llama-3.2-1B", ["models"], base=base) == "meta-llama/Llama-3.2-1B"
    assert resolve_source("gpt2", ["models"], base=base) == "gpt2"


def test_hub_ids_can_be_disabled(base: Path) -> None:
    with pytest.raises(SourceError, match="disabled"):
        resolve_source("org/m", ["models"], allow_hub=False, base=base)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("elsewhere/b", "outside the allowed model roots"),
        ("models/../elsewhere/b", "outside the allowed model roots"),
        ("models/a/../../elsewhere/b", "outside the allowed model roots"),
        ("./models/missing", "does not exist"),
        ("/no/such/folder", "does not exist"),
        ("org/../x", "neither"),
        ("bad id with spaces", "neither"),
    ],
)
def test_rejected_sources(base: Path, source: str, fragment: str) -> None:
    with pytest.raises(SourceError, match=fragment):
        resolve_source(source, ["models"], base=base)


def test_symlinks_cannot_escape_the_roots(base: Path) -> None:
    (base / "models" / "link").symlink_to(base / "elsewhere" / "b")
    with pytest.raises(SourceError, match="outside"):
        resolve_source("models/link", ["models"], base=base)


def test_folders_without_a_model_are_rejected(base: Path) -> None:
    (base / "models" / "empty").mkdir()
    with pytest.raises(SourceError, match=r"no config\.json"):
        resolve_source("models/empty", ["models"], base=base)
    (base / "models" / "empty" / "config.json").write_text("{}")
    with pytest.raises(SourceError, match="no weights"):
        resolve_source("models/empty", ["models"], base=base)
    (base / "models" / "empty" / "rank_0").mkdir()
    (base / "models" / "empty" / "rank_0" / "tensor_index.json").write_text("{}")
    assert resolve_source("models/empty", ["models"], base=base).endswith("empty")  # sllm-store format
