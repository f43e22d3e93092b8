"""Which model a request is for, and the handle that reaches it.

Pure logic, kept apart from the Serve deployment so it is unit-tested without Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sllm_ray.config import AdapterConfig, ModelConfig
from sllm_ray.errors import BadRequestError, ModelNotFoundError

H = TypeVar("H")

# ServerlessLLM v1-beta names a model with its backend (``facebook/opt-125m:vllm``): a
# request for ``name:<backend>`` is served by ``name`` when no model has the whole name.
BACKEND_SUFFIXES = (":vllm",)
# ServerlessLLM's field naming a request's adapter, beside ``model`` naming its base.
SLLM_ADAPTER_FIELD = "lora_adapter_name"


@dataclass(frozen=True)
class Route:
    """Where a request goes: its model (an adapter's base), the adapter, and the body to
    forward (``model`` naming what the engine serves: the model or the adapter). No handle
    yet: a model whose application Serve is still taking back (a retry after a failed
    start) gets its handle once it is deployed (``get``)."""

    config: ModelConfig
    adapter: AdapterConfig | None
    body: dict[str, Any]

    @property
    def served(self) -> str:
        """The name the request is accounted under: the adapter's, else the model's."""
        return self.adapter.adapter if self.adapter is not None else self.config.model


class ModelDirectory(Generic[H]):
    """The models requests may be routed to, and a handle for each (made on first use)."""

    def __init__(self, make_handle: Callable[[ModelConfig], H]) -> None:
        self._make_handle = make_handle
        self._models: dict[str, ModelConfig] = {}
        self._adapters: dict[str, tuple[str, AdapterConfig]] = {}  # adapter -> (base, adapter)
        self._handles: dict[str, H] = {}
        self._created = int(time.time())

    def sync(self, models: list[ModelConfig]) -> None:
        """Replace the whole set (a refresh from the registry)."""
        self._models = {m.model: m for m in models}
        self._adapters = {a.adapter: (m.model, a) for m in models for a in m.adapters}
        self._handles = {n: h for n, h in self._handles.items() if n in self._models}

    def remove(self, name: str) -> None:
        """Route no more requests to the model or adapter (its base's adapters with it)."""
        self._models.pop(name, None)
        self._handles.pop(name, None)
        self._adapters = {a: (base, c) for a, (base, c) in self._adapters.items() if name not in (a, base)}

    def drop_handle(self, name: str) -> None:
        """Forget the model's handle (its application was removed); the next request makes
        a new one."""
        self._handles.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return self._known(name) is not None

    def _known(self, name: object) -> str | None:
        """The registered model or adapter ``name`` stands for (a backend suffix dropped)."""
        if not isinstance(name, str):
            return None
        if name in self._models or name in self._adapters:
            return name
        for suffix in BACKEND_SUFFIXES:
            bare = name.removesuffix(suffix)
            if bare != name and (bare in self._models or bare in self._adapters):
                return bare
        return None

    def route(self, body: dict[str, Any]) -> Route:
        """Where the request goes, by its ``model`` field (an adapter's name, or ServerlessLLM's
        ``lora_adapter_name`` beside its base's); a 404 in OpenAI's shape when nothing has it."""
        name = body.get("model")
        if name is None or name == "":
            raise ModelNotFoundError(None)
        if not isinstance(name, str):
            raise BadRequestError("`model` must be a string", param="model")
        known = self._known(name)
        if known is None:
            raise ModelNotFoundError(name)
        if SLLM_ADAPTER_FIELD in body:  # ServerlessLLM's way: the base in ``model``
            wanted = body[SLLM_ADAPTER_FIELD]
            body = {k: v for k, v in body.items() if k != SLLM_ADAPTER_FIELD}
            if wanted is not None:
                if not isinstance(wanted, str):
                    raise BadRequestError(
                        f"`{SLLM_ADAPTER_FIELD}` must be a string", param=SLLM_ADAPTER_FIELD
                    )
                owner = self._adapters.get(wanted)
                if owner is None or owner[0] != known:
                    raise ModelNotFoundError(wanted)
                known = wanted
        adapter: AdapterConfig | None = None
        if known in self._adapters:
            base, adapter = self._adapters[known]
        else:
            base = known
        if known != name:
            body = {**body, "model": known}
        return Route(self._models[base], adapter, body)

    def get(self, name: str) -> tuple[ModelConfig, H]:
        if name not in self._models:
            raise ModelNotFoundError(name)
        config = self._models[name]
        if name not in self._handles:
            self._handles[name] = self._make_handle(config)
        return config, self._handles[name]

    def card(self, name: str) -> dict[str, Any]:
        """OpenAI's model object, answered without waking the model; an adapter's names its
        base as ``parent`` (as vLLM's own model list does)."""
        known = self._known(name)
        if known is None:
            raise ModelNotFoundError(name)
        card = {"id": known, "object": "model", "created": self._created, "owned_by": "sllm-ray"}
        if known in self._adapters:
            base, adapter = self._adapters[known]
            card |= {"parent": base, "root": adapter.source}
        return card

    def list_cards(self) -> dict[str, Any]:
        """OpenAI's model list; the same cards under ``models`` too, where ServerlessLLM's
        CLI (``sllm status``) reads them."""
        cards = [self.card(name) for name in sorted([*self._models, *self._adapters])]
        return {"object": "list", "data": cards, "models": cards}
