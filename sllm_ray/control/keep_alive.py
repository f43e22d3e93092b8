"""Adaptive keep-alive: each model's windows from the histogram of its own idle times.

The hybrid-histogram policy of "Serverless in the Wild" (Shahrad et al., USENIX ATC
2020): idle times (between a model's consecutive requests) go into bins of ``bin_s`` up
to ``range_s``. Once the histogram is representative (enough idle times, few beyond its
range, bin counts far from flat: coefficient of variation at least ``min_cv``), the
model is unloaded right after a request, loaded again ``prewarm_s`` later (the head: the
5th percentile, less a 10 % margin) and kept ``keep_alive_s`` more (to the tail: the
99th percentile, plus 10 %). Otherwise the fixed keep-alive applies (the paper falls back
to a long fixed window, or to a time-series forecast for idle times beyond the range,
which is not done here).

Pure logic: the model manager feeds it the requests it sees (``control/manager.py``),
and the simulator the trace's (``simulator/``), so both decide the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

HEAD_PERCENTILE = 5.0
TAIL_PERCENTILE = 99.0
MARGIN = 0.10
# The paper's: 1-minute bins over 4 hours, at least a coefficient of variation of 2.
BIN_S = 60.0
RANGE_S = 4 * 3600.0
MIN_CV = 2.0
MIN_SAMPLES = 10
# Beyond this share of idle times out of range, the histogram says too little.
MAX_OUT_OF_RANGE = 0.5

FIXED, HISTOGRAM = "fixed", "histogram"


@dataclass(frozen=True)
class Windows:
    """After a request: unload at once when ``prewarm_s`` > 0 and load again at
    ``prewarm_s``; keep loaded until ``prewarm_s + keep_alive_s``. ``source`` says which
    rule gave them."""

    prewarm_s: float
    keep_alive_s: float
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IdleHistogram:
    """One model's idle times, binned."""

    bin_s: float = BIN_S
    range_s: float = RANGE_S
    min_samples: int = MIN_SAMPLES
    min_cv: float = MIN_CV

    def __post_init__(self) -> None:
        self.counts = [0] * max(1, math.ceil(self.range_s / self.bin_s))
        self.out_of_range = 0
        self.last_arrival: float | None = None

    @property
    def samples(self) -> int:
        return sum(self.counts) + self.out_of_range

    def observe(self, at: float) -> None:
        """A request arrived at ``at`` (seconds, any clock that only goes forward)."""
        if self.last_arrival is not None:
            idle = max(0.0, at - self.last_arrival)
            if idle >= self.range_s:
                self.out_of_range += 1
            else:
                self.counts[int(idle // self.bin_s)] += 1
        self.last_arrival = at

    def _percentile_bin(self, percentile: float) -> int:
        target = percentile / 100.0 * sum(self.counts)
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if count and seen >= target:
                return index
        return len(self.counts) - 1

    def _coefficient_of_variation(self) -> float:
        mean = sum(self.counts) / len(self.counts)
        if mean == 0:
            return 0.0
        variance = sum((c - mean) ** 2 for c in self.counts) / len(self.counts)
        return math.sqrt(variance) / mean

    def windows(self, fixed_keep_alive_s: float) -> Windows:
        if (
            self.samples < self.min_samples
            or self.out_of_range > MAX_OUT_OF_RANGE * self.samples
            or self._coefficient_of_variation() < self.min_cv
        ):
            return Windows(0.0, fixed_keep_alive_s, FIXED)
        head = self._percentile_bin(HEAD_PERCENTILE) * self.bin_s
        tail = (self._percentile_bin(TAIL_PERCENTILE) + 1) * self.bin_s
        prewarm = head * (1 - MARGIN)
        return Windows(prewarm, tail * (1 + MARGIN) - prewarm, HISTOGRAM)
