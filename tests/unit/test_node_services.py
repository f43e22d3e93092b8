"""NodeServices' bookkeeping of the per-node services, against stand-in actors: a store that
restarts is asked again for what it held in DRAM or was preparing, and nothing else; every
engine start a pool is told of reaches the manager once, across the pool's restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray

from sllm_ray.config import AppConfig, ModelConfig
from sllm_ray.control import nodes as nodes_module
from sllm_ray.control.nodes import NodeServices, _Node
from sllm_ray.engine.records import EngineStarted, EngineStarts
from sllm_ray.engine.start_feed import StartFeed
from sllm_ray.names import checkpoint_key


class _Method:
    """An actor method's ``.remote``: an awaitable of the call's result."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        result = self._call(*args, **kwargs)
        if isinstance(result, asyncio.Task):  # an async method's
            return result
        future = asyncio.get_running_loop().create_future()
        future.set_result(result)
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
    """A pool's reports and its engine starts; ``down``: its calls fail, as while Ray
    restarts it."""

    def __init__(self) -> None:
        self.status = _Method(lambda: {"sleeping": []})
        self.forget = _Method(lambda model: None)
        self.feed = StartFeed()
        self.down = False
        self.engines_started = _Method(self._since)

    def _since(self, instance: str, seq: int, wait_s: float) -> asyncio.Task[EngineStarts]:
        if self.down:
            raise ray.exceptions.ActorUnavailableError("restarting", None)
        return asyncio.get_running_loop().create_task(self.feed.since(instance, seq, wait_s))


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_restarted_store_is_asked_again_for_what_it_held(tmp_path: Path) -> None:
    async def run() -> None:
        nodes = NodeServices("app", AppConfig(), tmp_path, lambda started: None)
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


def test_every_engine_start_a_pool_is_told_of_reaches_the_manager_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nodes_module, "FOLLOW_RETRY_S", 0.01)
    monkeypatch.setattr(nodes_module, "FOLLOW_WAIT_S", 0.01)  # calls under way end soon
    monkeypatch.setattr(ray, "kill", lambda actor, no_restart: None)  # stand-ins: no Ray here

    async def run() -> None:
        heard: list[EngineStarted] = []
        nodes = NodeServices("app", AppConfig(), tmp_path, heard.append)
        pool = _Pool()
        nodes._nodes["n1"] = _Node(pool, _Store())
        early = EngineStarted("a", "f1", "r1")
        pool.feed.add(early)  # before the manager follows the pool: kept for it
        await nodes.refresh()
        await asyncio.sleep(0.02)
        assert heard == [early]
        await nodes.refresh()  # followed already: not a second follower
        later = [EngineStarted("b", "f2", "r2"), EngineStarted("a", "f1", "r3")]
        for started in later:
            pool.feed.add(started)
        await asyncio.sleep(0.02)
        assert heard == [early, *later]
        # Ray restarts the pool: calls fail meanwhile, and its new feed starts afresh.
        pool.down = True
        await asyncio.sleep(0.05)
        pool.feed = StartFeed()
        after = EngineStarted("c", "f3", "r4")
        pool.feed.add(after)
        pool.down = False
        await asyncio.sleep(0.05)
        assert heard == [early, *later, after]
        node = nodes._nodes.pop("n1")
        nodes_module._stop(node)  # the node's services stopped (its node gone): so is its follower
        await asyncio.sleep(0.02)
        assert node.follow is not None and node.follow.cancelled()

    asyncio.run(run())
