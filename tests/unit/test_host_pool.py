"""Sleeping engines in a node's pool: the per-node limit, least recently used out, hot claims."""

from __future__ import annotations

import asyncio
from typing import Any

from sllm_ray.engine.host_pool import HostPool


class _Call:
    def __init__(self, log: list[str], what: str) -> None:
        self._log, self._what = log, what

    def remote(self, *args: Any) -> Any:
        self._log.append(self._what)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("host-id")
        return done


class Host:
    """Records what the pool asks of it (a Ray actor handle in the real pool)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[str] = []
        self.release = _Call(self.calls, "release")
        self.claim = _Call(self.calls, "claim")


def test_sleepers_over_the_limit_exit_least_recently_used_first() -> None:
    async def scenario() -> None:
        pool = HostPool("app", "node", size=0, sleep_limit=2)
        a, b, c = Host("a"), Host("b"), Host("c")
        assert pool.park(a, "a", "fp-a", "model-a")
        assert pool.park(b, "b", "fp-b", "model-b")
        assert pool.park(c, "c", "fp-c", "model-c")
        assert a.calls == ["release"] and b.calls == [] and c.calls == []
        assert [s["model"] for s in pool.status()["sleeping"]] == ["model-b", "model-c"]
        # A replica of model-b on this node gets its sleeping engine back (a hot claim).
        assert await pool.claim("replica-1", "fp-b") is b
        assert b.calls == ["claim"] and pool.status()["hot_claims"] == 1
        # ... and when it is done, b is the most recently used sleeper.
        pool.park(b, "b", "fp-b", "model-b")
        pool.park(Host("d"), "d", "fp-d", "model-d")
        assert c.calls == ["release"]
        assert [s["model"] for s in pool.status()["sleeping"]] == ["model-b", "model-d"]
        assert pool.status()["evictions"] == 2

    asyncio.run(scenario())


def test_no_sleepers_when_the_limit_is_zero_or_the_model_was_deleted() -> None:
    async def scenario() -> None:
        assert not HostPool("app", "node", size=0, sleep_limit=0).park(Host("a"), "a", "fp", "m")
        pool = HostPool("app", "node", size=0, sleep_limit=2)
        a = Host("a")
        pool.park(a, "a", "fp", "m")
        pool.forget("m")
        assert a.calls == ["release"] and pool.status()["sleeping"] == []
        assert not pool.park(Host("late"), "late", "fp", "m")  # retiring after the delete
        assert pool.park(Host("other"), "other", "fp-o", "other")

    asyncio.run(scenario())
