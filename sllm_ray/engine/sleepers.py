"""A node's sleeping engines: least recently used first out beyond a limit.

Pure logic, shared by the node's ``HostPool`` (``engine/host_pool.py``), which holds the
engine hosts, and by the simulator (``simulator/``), which holds only their names: the
eviction order the simulator predicts is the one the pool applies.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Sleepers(Generic[K, T]):
    """Sleeping engines by key (a host id), each with its engine fingerprint."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._asleep: OrderedDict[K, tuple[str | None, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._asleep)

    def __iter__(self) -> Iterator[T]:
        """Least recently used first."""
        return (item for _, item in self._asleep.values())

    def fingerprints(self) -> set[str | None]:
        return {fingerprint for fingerprint, _ in self._asleep.values()}

    def add(self, key: K, fingerprint: str | None, item: T) -> list[T]:
        """Put an engine to sleep; the ones evicted to stay within the limit, oldest first."""
        self._asleep[key] = (fingerprint, item)
        evicted = []
        while len(self._asleep) > self.limit:
            evicted.append(self._asleep.popitem(last=False)[1][1])
        return evicted

    def take(self, fingerprint: str | None) -> T | None:
        """Wake the most recently slept engine with this fingerprint, if any."""
        for key, (held, item) in reversed(self._asleep.items()):
            if held == fingerprint:
                del self._asleep[key]
                return item
        return None

    def pop(self, key: K) -> None:
        """Forget ``key``'s item, if asleep here."""
        self._asleep.pop(key, None)
