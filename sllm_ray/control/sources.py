"""Where a model's weights come from: a local folder inside the allowed roots, or a hub id.

Checked when a model is registered, so a typo or a path escaping the roots is a 422 at
registration rather than a replica that fails to start minutes later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Hugging Face ids: "name" or "org/name" with letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PATH_PREFIXES = ("/", "./", "../", "~")


class SourceError(ValueError):
    """A model source (or a path among the engine arguments, named by ``param``) that this
    deployment does not accept."""

    def __init__(self, message: str, param: str = "model_source") -> None:
        super().__init__(message)
        self.param = param


class SourceNotFound(SourceError):
    """A source that names nothing: a folder that does not exist, or a hub id this node can
    find nowhere (not a valid id, not on the hub, or, offline or the hub not answering, not
    in the local cache). A 404, as OpenAI answers a model it does not have."""


def _check_model_folder(folder: Path, source: str) -> None:
    """A folder an engine can load: a config and weights (safetensors, or a checkpoint in
    the sllm-store format), so a wrong folder fails here, not in a replica later."""
    if not (folder / "config.json").is_file():
        raise SourceError(f"model_source folder {source!r} has no config.json")
    has_weights = any(folder.glob("*.safetensors")) or (folder / "rank_0" / "tensor_index.json").is_file()
    if not has_weights:
        raise SourceError(
            f"model_source folder {source!r} has no weights "
            "(*.safetensors, or rank_0/ in the sllm-store format)"
        )


def inside_roots(source: str, roots: Sequence[str | Path], base: Path, what: str) -> Path:
    """The path ``source`` names (relative: to ``base``), symlinks and ``..`` resolved, when it
    lies inside one of ``roots``; else ``SourceError`` (``what``: the field, for its message).
    It need not exist."""
    real = (base / Path(source).expanduser()).resolve()
    allowed = [(base / Path(root).expanduser()).resolve() for root in roots]
    if not any(real.is_relative_to(root) for root in allowed):
        shown = ", ".join(str(r) for r in allowed) or "(none configured)"
        raise SourceError(f"{what} {source!r} lies outside the allowed model roots: {shown}", what)
    return real


def _looks_local(source: str, roots: Sequence[str | Path], base: Path) -> bool:
    """Whether ``source`` is meant as a folder, though none may exist there: a path prefix, a
    Windows separator, more segments than a hub id has (``org/name``), or a first segment
    that is a model root or an existing folder (``models/does-not-exist``: a typo, never a
    hub repository to download)."""
    if source.startswith(_PATH_PREFIXES) or "\\" in source or source.count("/") > 1:
        return True
    first, _, rest = source.partition("/")
    root_names = {Path(root).expanduser().parts[0] for root in roots if Path(root).parts}
    return bool(rest) and (first in root_names or (base / first).is_dir())


def resolve_source(
    source: str, roots: Sequence[str | Path], *, allow_hub: bool = True, base: Path | None = None
) -> str:
    """Return the source as every replica should see it: an absolute, symlink-free folder
    inside one of ``roots``, or a hub id unchanged. Relative paths are taken from ``base``
    (default: the working directory)."""
    base = base or Path.cwd()
    candidate = base / Path(source).expanduser()
    if candidate.exists() or _looks_local(source, roots, base):
        if not candidate.resolve().is_dir():
            raise SourceNotFound(f"model_source folder {source!r} does not exist")
        real = inside_roots(source, roots, base, "model_source")
        _check_model_folder(real, source)
        return str(real)
    if is_hub_id(source, roots, base):
        if not allow_hub:
            raise SourceError("hub model ids are disabled here (allow_hub_models: false)")
        return source
    raise SourceNotFound(f"model_source {source!r} is neither an existing folder nor a Hugging Face id")


# How long the hub may take to say whether a model exists, at registration.
HUB_TIMEOUT_S = 10.0


def check_hub_model(repo_id: str, *, offline: bool | None = None, cache_dir: str | None = None) -> None:
    """A hub id that names a model: one the hub has or, offline (``HF_HUB_OFFLINE``, the
    default of ``offline``) or when the hub cannot be reached, one in the local Hugging Face
    cache (``cache_dir``: the default cache); else ``SourceNotFound``. So a typo is
    refused at registration, not a replica failing to download minutes later. Blocking
    (network)."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    def cached() -> bool:
        return isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir), str)

    try:
        validate_repo_id(repo_id)  # the hub's own rules: lengths and characters our pattern does not check
    except HFValidationError as exc:
        raise SourceNotFound(f"model_source {repo_id!r} cannot be a Hugging Face id: {exc}") from None
    where = cache_dir or constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE if offline is None else offline:
        if not cached():
            raise SourceNotFound(
                f"model_source {repo_id!r} is not in the local Hugging Face cache ({where}), and "
                "the hub is offline (HF_HUB_OFFLINE)"
            )
        return
    try:
        model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:  # it exists; the engine hosts' token decides whether it loads
        return
    except RepositoryNotFoundError:
        message = f"model_source {repo_id!r} does not exist on the Hugging Face hub"
        raise SourceNotFound(message) from None
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        if not cached():
            raise SourceNotFound(
                f"model_source {repo_id!r}: the Hugging Face hub cannot be reached "
                f"({type(exc).__name__}) and the model is not in the local cache ({where})"
            ) from None


# vLLM engine arguments that name a file or folder the engine reads (or writes). Each must
# lie inside the model roots, like model_source: an admin could otherwise have an engine
# read any file the node can (a tokenizer "folder" of /etc, media from anywhere).
PATH_ENGINE_ARGS = frozenset(
    {
        "model",
        "tokenizer",
        "download_dir",
        "hf_config_path",
        "allowed_local_media_path",
        "generation_config",
        "qlora_adapter_name_or_path",
    }
)
# Of those, the ones that may instead name a Hugging Face repository (or, for
# generation_config, one of vLLM's keywords).
_HUB_OR_PATH = frozenset({"model", "tokenizer", "hf_config_path", "generation_config"})
_GENERATION_CONFIG_KEYWORDS = frozenset({"auto", "vllm"})


def check_engine_paths(
    engine_kwargs: Mapping[str, Any], roots: Sequence[str | Path], *, allow_hub: bool, base: Path
) -> None:
    """Every path among a model's engine arguments inside the model roots, else
    ``SourceError`` (``param``: the argument). Checked: the arguments that name files
    (``PATH_ENGINE_ARGS``) and, in the nested ones (``model_loader_extra_config``,
    ``speculative_config``, ...), every string that looks like a path."""
    for key, value in engine_kwargs.items():
        param = f"engine_kwargs.{key}"
        if key in PATH_ENGINE_ARGS and isinstance(value, str):
            if key == "generation_config" and value in _GENERATION_CONFIG_KEYWORDS:
                continue
            if key in _HUB_OR_PATH and is_hub_id(value, roots, base):
                if not allow_hub:
                    raise SourceError(f"{param}: hub ids are disabled here (allow_hub_models: false)", param)
                continue
            inside_roots(value, roots, base, param)
        elif isinstance(value, Mapping | list):
            for text in _strings(value):
                if text.startswith(_PATH_PREFIXES) or "\\" in text:
                    inside_roots(text, roots, base, param)


def is_hub_id(value: str, roots: Sequence[str | Path], base: Path) -> bool:
    """A Hugging Face id, not a folder (existing or mistyped)."""
    if (base / value).exists() or _looks_local(value, roots, base):
        return False
    return ".." not in value and bool(_HUB_ID.match(value))


def _strings(value: object) -> list[str]:
    """Every string inside a nested engine argument (dict values, list items)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []
