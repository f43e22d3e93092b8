"""Which model a request is for, and the handle that reaches it.

Pure logic, kept apart from the Serve deployment so it is unit-tested without Ray.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from sllm_ray.api.errors import BadRequestError, ModelNotFoundError
from sllm_ray.config import ModelConfig

H = TypeVar("H")


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("request body must be a JSON object")
    return body


class ModelDirectory(Generic[H]):
    """Maps model names to their configs and to whatever reaches their deployment."""

    def __init__(self, models: list[ModelConfig], handles: Mapping[str, H]) -> None:
        missing = {m.model for m in models} - set(handles)
        if missing:
            raise ValueError(f"no deployment handle for models: {sorted(missing)}")
        self._models = {m.model: m for m in models}
        self._handles = dict(handles)
        self._created = int(time.time())

    def resolve(self, body: Mapping[str, Any]) -> tuple[ModelConfig, H]:
        """The model named by the body's ``model`` field, or a 404 in OpenAI's shape."""
        name = body.get("model")
        if name is None or name == "":
            raise ModelNotFoundError(None)
        if not isinstance(name, str):
            raise BadRequestError("`model` must be a string", param="model")
        return self.get(name)

    def get(self, name: str) -> tuple[ModelConfig, H]:
        if name not in self._models:
            raise ModelNotFoundError(name)
        return self._models[name], self._handles[name]

    def card(self, name: str) -> dict[str, Any]:
        """OpenAI's model object, answered without waking the model."""
        config, _ = self.get(name)
        return {
            "id": config.model,
            "object": "model",
            "created": self._created,
            "owned_by": "sllm-ray",
            "root": config.model_source,
        }

    def list_cards(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.card(name) for name in self._models]}
