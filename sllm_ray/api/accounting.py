"""One generation request, accounted for: its metrics and its one INFO log line.

The ingress makes a ``RequestLog`` when a generation request arrives and closes it once:
with the status and the tokens, when a reply is whole, a stream ends, or an error is
sent. Time to first token is the head of a whole reply, or the first stream event that
carries text. ``start_kind`` is what the replica said of the request (``Accepted.start_kind``):
cold (its replica was started for it), hot (a sleeping engine was woken for it) or warm.
A request for a LoRA adapter is accounted under the adapter's name (the ``model`` label),
its line naming the base too (``base=``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sllm_ray import metrics
from sllm_ray.protocol import parse_sse_event

logger = logging.getLogger("sllm_ray.requests")


class RequestLog:
    def __init__(self, model: str, endpoint: str) -> None:
        self.model = model
        self.endpoint = endpoint
        self.start_kind = "warm"
        self.base: str | None = None  # an adapter's base model
        self._started = time.monotonic()
        self._first_token_s: float | None = None
        self._tokens = 0
        self._closed = False

    def event(self, event: str) -> None:
        """A stream event went out: the first one with text is the first token."""
        try:
            chunk = parse_sse_event(event)
        except ValueError:
            return
        if not chunk:
            return
        usage = chunk.get("usage")
        if usage:
            self._tokens = int(usage.get("completion_tokens") or self._tokens)
        for choice in chunk.get("choices") or ():
            if choice.get("text") or (choice.get("delta") or {}).get("content"):
                if self._first_token_s is None:
                    self._first_token_s = time.monotonic() - self._started
                if not usage:
                    self._tokens += 1

    def whole(self, body: dict[str, Any]) -> None:
        """A non-streaming reply: its usage counts the tokens; all of it came at once."""
        self._first_token_s = time.monotonic() - self._started
        self._tokens = int((body.get("usage") or {}).get("completion_tokens") or 0)

    def close(self, status: int) -> None:
        if self._closed:
            return
        self._closed = True
        latency = time.monotonic() - self._started
        metrics.count("sllm_requests_total", {"model": self.model, "status": str(status)})
        timing = {"model": self.model, "start": self.start_kind}
        metrics.observe("sllm_request_latency_seconds", timing, latency)
        if status == 200 and self._first_token_s is not None:
            metrics.observe("sllm_time_to_first_token_seconds", timing, self._first_token_s)
        ttft = f"{self._first_token_s:.3f}" if self._first_token_s is not None else "-"
        logger.info(
            "%s model=%s%s status=%d tokens=%d ttft_s=%s latency_s=%.3f start=%s",
            self.endpoint,
            self.model,
            f" base={self.base}" if self.base else "",
            status,
            self._tokens,
            ttft,
            latency,
            self.start_kind,
            extra={
                "model": self.model,
                "base": self.base,
                "status": status,
                "tokens": self._tokens,
                "ttft_s": self._first_token_s,
                "latency_s": round(latency, 4),
                "start": self.start_kind,
            },
        )
