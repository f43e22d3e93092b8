"""Waiting for a process on this node to exit, whoever its parent is.

A replica watches its engine host, and a pool the replicas holding its hosts; neither is
the other's parent, so ``waitpid`` is not theirs to call. A pidfd (Linux 5.3+) becomes
readable when its process exits and, opened while the process lives, never names a
process that reused the pid.
"""

from __future__ import annotations

import asyncio
import os


async def wait_exit(pid: int) -> None:
    """Return once process ``pid`` has exited (at once when it is gone already)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(fd, lambda: exited.done() or exited.set_result(None))
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
