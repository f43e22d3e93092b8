"""NodeServices' bookkeeping of the per-node stores, against stand-in actors: a store that
restarts is asked again for what it held in DRAM or was preparing, and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sllm_ray.config import AppConfig, ModelConfig
from sllm_ray.control.nodes import NodeServices, _Node
from sllm_ray.names import checkpoint_key


class _Method:
    """An actor method's ``.remote``: an awaitable of the call's result."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        future.set_result(self._call(*args, **kwargs))
        return future


class _Store:
    def __init__(self) -> None:
        self.instance = "first"
        self.dram: list[str] = []
        self.preparing: list[str] = []
        self.prepared: list[str] = []
        self.status = _Method(
            lambda: {
                "instance": self.instance,
                "dram": {"checkpoints": list(self.dram)},
                "disk": {},
                "preparing": list(self.preparing),
            }
        )
        self.prepare = _Method(lambda model, source, layout: self.prepared.append(model))
        self.forget = _Method(lambda model, source: None)


class _Pool:
    status = _Method(lambda: {"sleeping": []})
    forget = _Method(lambda model: None)


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_restarted_store_is_asked_again_for_what_it_held(tmp_path: Path) -> None:
    async def run() -> None:
        nodes = NodeServices("app", AppConfig(), tmp_path)
        store = _Store()
        nodes._nodes["n1"] = _Node(_Pool(), store)
        models = {name: ModelConfig(model=name, model_source=f"/src/{name}") for name in "abc"}
        for config in models.values():
            nodes.prepare(config)
        await _settle()
        assert sorted(store.prepared) == ["a", "b", "c"]
        # "a" in DRAM, "b" still being prepared, "c" evicted to disk.
        store.dram = [checkpoint_key("a", "/src/a")]
        store.preparing = [checkpoint_key("b", "/src/b")]
        await nodes.refresh()
        await nodes.refresh()  # the same instance: nothing asked
        await _settle()
        assert len(store.prepared) == 3
        store.instance, store.dram, store.preparing, store.prepared = "second", [], [], []
        await nodes.refresh()
        await _settle()
        assert sorted(store.prepared) == ["a", "b"]
        # A model deleted since is not brought back.
        nodes.forget(models["a"])
        store.dram = [checkpoint_key("a", "/src/a")]
        await nodes.refresh()
        store.instance, store.prepared = "third", []
        await nodes.refresh()
        await _settle()
        assert store.prepared == []

    asyncio.run(run())
