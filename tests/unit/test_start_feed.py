"""The engine starts a pool keeps for the manager (pure asyncio, no Ray)."""

from __future__ import annotations

import asyncio

from sllm_ray.engine.records import EngineStarted
from sllm_ray.engine.start_feed import StartFeed


def _started(n: int) -> EngineStarted:
    return EngineStarted(f"m{n}", "f", f"r{n}")


def test_a_follower_gets_each_start_once_and_waits_for_the_next() -> None:
    async def run() -> None:
        feed = StartFeed(kept=3)
        first = await feed.since("", 0, 10)  # a new follower: all kept, at once
        assert first.instance == feed.instance and first.seq == 0 and first.started == ()
        waiting = asyncio.ensure_future(feed.since(feed.instance, first.seq, 10))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # nothing new: it waits
        feed.add(_started(1))
        woken = await asyncio.wait_for(waiting, 1)
        assert woken.seq == 1 and woken.started == (_started(1),)
        quiet = await feed.since(feed.instance, woken.seq, 0.01)  # the wait bound: nothing
        assert quiet.seq == 1 and quiet.started == ()
        for n in range(2, 6):
            feed.add(_started(n))
        assert (await feed.since(feed.instance, 1, 10)).started == tuple(map(_started, (3, 4, 5)))
        # Another instance's mark (the pool restarted): all that are kept.
        assert (await feed.since("older", 5, 10)).started == tuple(map(_started, (3, 4, 5)))

    asyncio.run(run())
