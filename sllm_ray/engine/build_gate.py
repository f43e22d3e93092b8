"""A node-wide limit on the engine builds that run at once.

An engine build (weights copied in, KV cache allocated and zeroed, a warm-up step) is
CPU and memory-bandwidth bound. Four builds at once on two cores each took 2.5 to 3.3 s
instead of 0.5 s alone (``benchmarks/burst.py``, N = 4): all four finished late, where
two at a time let the first two finish in about the time of one. So each host takes one
of its node's build slots before it builds, and gives it back when its engine is ready
or failed.

A slot is an exclusive ``flock`` on one of ``slots`` files in the pool's folder: the
kernel drops it when the process holding it dies, so a host killed mid-build never
keeps a slot. A host waiting for one polls every ``POLL_S``; waits are short (a build
takes a second or two) and there is no order among the waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator

POLL_S = 0.01


class BuildGate:
    """``slots`` builds at once among the processes that share ``directory``; 0: no limit."""

    def __init__(self, directory: str, slots: int) -> None:
        self.directory = directory
        self.slots = slots

    def _try(self) -> int | None:
        for slot in range(self.slots):
            fd = os.open(os.path.join(self.directory, f"build-{slot}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold a slot for the body; yields the seconds waited for it."""
        started = time.perf_counter()
        if self.slots <= 0:
            yield 0.0
            return
        while (fd := self._try()) is None:
            await asyncio.sleep(POLL_S)
        try:
            yield time.perf_counter() - started
        finally:
            os.close(fd)  # closing the only descriptor of the file releases its lock
