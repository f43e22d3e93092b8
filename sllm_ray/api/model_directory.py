"""Which model a request is for, and the handle that reaches it.

Pure logic, kept apart from the Serve deployment so it is unit-tested without Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sllm_ray.config import ModelConfig
from sllm_ray.errors import BadRequestError, ModelNotFoundError

H = TypeVar("H")


class ModelDirectory(Generic[H]):
    """The models requests may be routed to, and a handle for each (made on first use)."""

    def __init__(self, make_handle: Callable[[ModelConfig], H]) -> None:
        self._make_handle = make_handle
        self._models: dict[str, ModelConfig] = {}
        self._handles: dict[str, H] = {}
        self._created = int(time.time())

    def sync(self, models: list[ModelConfig]) -> None:
        """Replace the whole set (a refresh from the registry)."""
        self._models = {m.model: m for m in models}
        self._handles = {n: h for n, h in self._handles.items() if n in self._models}

    def remove(self, name: str) -> None:
        self._models.pop(name, None)
        self._handles.pop(name, None)

    def drop_handle(self, name: str) -> None:
        """Forget the model's handle (its application was removed); the next request makes
        a new one."""
        self._handles.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def resolve(self, body: dict[str, Any]) -> tuple[ModelConfig, H]:
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
        config = self._models[name]
        if name not in self._handles:
            self._handles[name] = self._make_handle(config)
        return config, self._handles[name]

    def card(self, name: str) -> dict[str, Any]:
        """OpenAI's model object, answered without waking the model."""
        if name not in self._models:
            raise ModelNotFoundError(name)
        return {"id": name, "object": "model", "created": self._created, "owned_by": "sllm-ray"}

    def list_cards(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.card(name) for name in sorted(self._models)]}
