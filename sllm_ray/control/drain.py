"""The app's drain before a shutdown (SIGTERM to ``sllm-ray serve``). Pure logic.

The model manager keeps this book: ``sllm-ray serve`` starts the drain; each ingress
replica learns it at its next routing poll (each second) and from then on refuses new
generation requests (503 with ``Retry-After``), while ``GET /ready`` is 503. Every poll
carries the ingress's requests in flight (streams until their last event) and whether it
was already refusing when it counted them; the app is drained once every ingress heard
from recently has counted none while refusing. Once ``drain_timeout_s`` has passed, the
ingresses cut the streams still open, each with a final error event: they do it while
they are still up, so the cut reaches the model replicas too (a shutdown that stopped an
ingress first would leave its streams running in them until Serve's grace period ends).
"""

from __future__ import annotations

from dataclasses import dataclass

# An ingress not heard from for this long is gone (stopped, restarted under a new id): it
# holds up no drain. Its polls come each second.
INGRESS_SILENT_S = 5.0


@dataclass(frozen=True)
class IngressReport:
    """One ingress replica's count at a routing poll."""

    in_flight: int
    refusing: bool  # it refused new requests before it counted
    at: float


@dataclass(frozen=True)
class DrainStatus:
    """Where a drain stands (``ModelManager.drain_status``)."""

    draining: bool
    drained: bool
    in_flight: int  # requests in flight in all ingresses, as last reported
    ingresses: int  # ingress replicas heard from recently


class DrainBook:
    def __init__(self) -> None:
        self.started_at: float | None = None
        self._reports: dict[str, IngressReport] = {}

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    def start(self, now: float) -> None:
        if self.started_at is None:
            self.started_at = now

    def cutting(self, now: float, bound_s: float) -> bool:
        """Whether the streams still in flight are to be cut: the drain's bound passed."""
        return self.started_at is not None and now - self.started_at >= bound_s

    def report(self, ingress: str, in_flight: int, refusing: bool, now: float) -> None:
        self._reports[ingress] = IngressReport(in_flight, refusing, now)

    def status(self, now: float) -> DrainStatus:
        recent = [r for r in self._reports.values() if now - r.at <= INGRESS_SILENT_S]
        drained = self.draining and all(r.refusing and r.in_flight == 0 for r in recent)
        return DrainStatus(self.draining, drained, sum(r.in_flight for r in recent), len(recent))
