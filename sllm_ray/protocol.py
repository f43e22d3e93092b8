"""Messages that travel between the ingress, the model replicas and the engines.

Every generation call is a stream on the Serve handle, whatever the client asked for:

1. ``Accepted`` as soon as a replica holds the request. The ingress bounds the wait for
   this item only, so a long generation never counts as "no replica came up".
2. ``ResponseHead``: the status and, for a non-streaming reply or an error, the whole
   body. For a stream the body is ``None`` and chunks follow. When the engine has it
   within ``ACCEPT_WINDOW_S`` (a stream's head comes at once) it travels inside
   ``Accepted``: one item fewer before the first token.
3. For a stream: SSE payload strings exactly as vLLM's serving layer writes them
   (``"data: {...}\\n\\n"``, the last one ``"data: [DONE]\\n\\n"``), forwarded untouched.

This module imports nothing heavy: the ingress must not pay for vLLM.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any


class Endpoint(enum.StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"

    @property
    def pooling(self) -> bool:
        """Whether a pooling model (vLLM's pooling runner) serves it, not a generative one."""
        return self is Endpoint.EMBEDDINGS


@dataclass(frozen=True)
class ResponseHead:
    status: int
    body: dict[str, Any] | None = None


# How long a replica holds ``Accepted`` back for the head to travel with it.
ACCEPT_WINDOW_S = 0.005


@dataclass(frozen=True)
class Accepted:
    """A replica has the request; ``replica`` says which one; ``head`` when it was ready.
    ``start_kind``: cold or hot when the request waited for this replica to start, else warm."""

    replica: str
    head: ResponseHead | None = None
    start_kind: str = "warm"


SSE_DONE = "data: [DONE]\n\n"


def parse_sse_event(event: str) -> dict[str, Any] | None:
    """Decode one SSE event written by vLLM; ``None`` for the final ``[DONE]``."""
    payload = event.strip()
    if payload.startswith("data:"):
        payload = payload[len("data:") :].strip()
    if payload == "[DONE]":
        return None
    return json.loads(payload)
