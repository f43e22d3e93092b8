"""Where a model's weights come from: a local folder inside the allowed roots, or a hub id.

Checked when a model is registered, so a typo or a path escaping the roots is a 422 at
registration rather than a replica that fails to start minutes later.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

# Hugging Face ids: "name" or "org/name" with letters, digits, "-", "_", ".".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_PATH_PREFIXES = ("/", "./", "../", "~")


class SourceError(ValueError):
    """The model source is not one this deployment accepts."""


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


def resolve_source(
    source: str, roots: Sequence[str | Path], *, allow_hub: bool = True, base: Path | None = None
) -> str:
    """Return the source as every replica should see it: an absolute, symlink-free folder
    inside one of ``roots``, or a hub id unchanged. Relative paths are taken from ``base``
    (default: the working directory)."""
    base = base or Path.cwd()
    path = Path(source).expanduser()
    candidate = path if path.is_absolute() else base / path
    if candidate.exists() or source.startswith(_PATH_PREFIXES) or "\\" in source:
        real = candidate.resolve()
        if not real.is_dir():
            raise SourceError(f"model_source folder {source!r} does not exist")
        allowed = [(base / Path(root).expanduser()).resolve() for root in roots]
        if not any(real.is_relative_to(root) for root in allowed):
            shown = ", ".join(str(r) for r in allowed) or "(none configured)"
            raise SourceError(f"model_source {source!r} lies outside the allowed model roots: {shown}")
        _check_model_folder(real, source)
        return str(real)
    if ".." not in source and _HUB_ID.match(source):
        if not allow_hub:
            raise SourceError("hub model ids are disabled here (allow_hub_models: false)")
        return source
    raise SourceError(f"model_source {source!r} is neither an existing folder nor a Hugging Face id")
