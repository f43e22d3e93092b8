"""Which model sources are accepted: folders inside the allowed roots, or hub ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from sllm_ray.control.sources import (
    SourceError,
    SourceNotFound,
    check_engine_paths,
    check_hub_model,
    resolve_source,
)


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
        ("org/../x", "does not exist"),  # a path, not a hub id
        # Mistyped folders are not hub ids to download: a root's name, an existing folder,
        # more segments than org/name.
        ("models/does-not-exist", "does not exist"),
        ("elsewhere/typo", "does not exist"),
        ("a/b/c", "does not exist"),
        ("bad id with spaces", "neither"),
    ],
)
def test_rejected_sources(base: Path, source: str, fragment: str) -> None:
    with pytest.raises(SourceError, match=fragment) as refused:
        resolve_source(source, ["models"], base=base)
    # A source that names nothing is a 404; one outside the roots is refused (a 422).
    assert isinstance(refused.value, SourceNotFound) == (fragment in ("does not exist", "neither"))


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


@pytest.mark.parametrize(
    ("engine_kwargs", "param"),
    [
        ({"tokenizer": "/etc"}, "engine_kwargs.tokenizer"),
        ({"tokenizer": "elsewhere/b"}, "engine_kwargs.tokenizer"),
        ({"tokenizer": "models/../elsewhere/b"}, "engine_kwargs.tokenizer"),
        ({"model": "/etc"}, "engine_kwargs.model"),
        ({"download_dir": "/tmp/anywhere"}, "engine_kwargs.download_dir"),
        ({"allowed_local_media_path": "/"}, "engine_kwargs.allowed_local_media_path"),
        (
            {"model_loader_extra_config": {"paths": ["/etc/passwd"]}},
            "engine_kwargs.model_loader_extra_config",
        ),
        ({"speculative_config": {"model": "../elsewhere/b"}}, "engine_kwargs.speculative_config"),
    ],
)
def test_engine_argument_paths_must_lie_inside_the_roots(base: Path, engine_kwargs: dict, param: str) -> None:
    with pytest.raises(SourceError, match="outside the allowed model roots") as caught:
        check_engine_paths(engine_kwargs, ["models"], allow_hub=True, base=base)
    assert caught.value.param == param


def test_engine_argument_paths_inside_the_roots_and_hub_ids_pass(base: Path) -> None:
    inside = {
        "tokenizer": "models/a",
        "download_dir": str(base / "models" / "cache"),
        "model_loader_extra_config": {"paths": ["./models/a/model.safetensors"], "n": 1},
        "generation_config": "auto",
        "dtype": "float16",
    }
    check_engine_paths(inside, ["models"], allow_hub=True, base=base)
    check_engine_paths({"tokenizer": "org/tokenizer"}, ["models"], allow_hub=True, base=base)
    with pytest.raises(SourceError, match="disabled"):
        check_engine_paths({"tokenizer": "org/tokenizer"}, ["models"], allow_hub=False, base=base)


def _hf_cache(cache: Path, repo_id: str) -> None:
    """A model in the layout of Hugging Face's cache: refs/main naming a snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


def test_an_id_the_hub_cannot_have_is_not_found(tmp_path: Path) -> None:
    """Our pattern takes any length; the hub's own rules (at most 96 characters) do not."""
    with pytest.raises(SourceNotFound, match="cannot be a Hugging Face id"):
        check_hub_model("0" * 127, offline=True, cache_dir=str(tmp_path))


def test_offline_a_hub_id_must_be_in_the_local_cache(tmp_path: Path) -> None:
    _hf_cache(tmp_path, "org/cached")
    check_hub_model("org/cached", offline=True, cache_dir=str(tmp_path))
    with pytest.raises(SourceNotFound, match=r"not in the local Hugging Face cache .*HF_HUB_OFFLINE"):
        check_hub_model("org/typo", offline=True, cache_dir=str(tmp_path))


def test_a_hub_that_does_not_answer_is_no_verdict_on_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreachable (a closed port here): a model in the cache is taken, any other is not
    found."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    _hf_cache(tmp_path, "org/cached")
    check_hub_model("org/cached", offline=False, cache_dir=str(tmp_path))
    with pytest.raises(SourceNotFound, match=r"hub cannot be reached .*not in the local cache"):
        check_hub_model("org/elsewhere", offline=False, cache_dir=str(tmp_path))
