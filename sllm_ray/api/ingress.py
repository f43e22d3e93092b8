"""The OpenAI-compatible ingress deployment.

HTTP clients reach the FastAPI routes; Python callers use the same logic through the
deployment handle (``handle.chat.remote(body)``, ``handle.options(stream=True)
.chat.remote({..., "stream": True})``). Either way a request is forwarded to the
per-model deployment named by its ``model`` field, as a stream on the Serve handle (see
``sllm_ray.protocol``), waiting at most ``request_wait_timeout_s`` for a replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from sllm_ray.api.errors import OpenAIError, ServiceUnavailableError, install_error_handlers
from sllm_ray.api.routing import ModelDirectory, parse_json_body
from sllm_ray.config import AppConfig
from sllm_ray.protocol import SSE_DONE, Accepted, Endpoint, ResponseHead, parse_sse_event

logger = logging.getLogger(__name__)

app = FastAPI(title="sllm_ray", description="Serverless LLM serving on Ray Serve")
install_error_handlers(app)


class _Reply:
    """A forwarded request once its replica answered: the head and, for a stream, the rest."""

    def __init__(self, head: ResponseHead, events: DeploymentResponseGenerator) -> None:
        self.head = head
        self.events = events

    async def sse(self) -> AsyncIterator[str]:
        """The stream's events; a failure mid-stream becomes a final SSE error event, since
        the HTTP status is already sent."""
        try:
            async for event in self.events:
                yield event
        except Exception as exc:  # the replica died or the engine failed mid-stream
            logger.exception("stream failed")
            err = OpenAIError(f"stream interrupted: {type(exc).__name__}: {exc}")
            yield f"data: {JSONResponse(err.body()).body.decode()}\n\n"
            yield SSE_DONE
        finally:
            self.events.cancel()

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """The stream as decoded chunk objects, for Python callers."""
        async for event in self.sse():
            chunk = parse_sse_event(event)
            if chunk is None:
                return
            if "error" in chunk:
                raise OpenAIError.from_body(int(chunk["error"].get("code") or 500), chunk)
            yield chunk


@serve.ingress(app)
class OpenAIIngress:
    """Routes OpenAI requests to the per-model deployments."""

    def __init__(self, config: AppConfig, model_handles: dict[str, DeploymentHandle]) -> None:
        self._config = config
        self._directory: ModelDirectory[DeploymentHandle] = ModelDirectory(config.models, model_handles)

    async def _forward(self, endpoint: Endpoint, body: dict[str, Any]) -> _Reply:
        config, handle = self._directory.resolve(body)
        events: DeploymentResponseGenerator = handle.options(stream=True).generate.remote(endpoint, body)
        wait_s = config.request_wait_timeout_s or self._config.request_wait_timeout_s
        try:
            accepted = await asyncio.wait_for(events.__anext__(), timeout=wait_s)
        except TimeoutError:
            events.cancel()
            raise ServiceUnavailableError(
                f"model `{config.model}` has no replica ready after {wait_s:g} s; retry later",
                self._config.retry_after_s,
            ) from None
        assert isinstance(accepted, Accepted), accepted
        head = await events.__anext__()
        return _Reply(head, events)

    # Python API (through the deployment handle).

    async def chat(self, body: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """OpenAI chat completion. With ``"stream": true`` (and ``handle.options(stream=True)``)
        an async iterator of chunk objects; otherwise the response object."""
        return await self._python_reply(Endpoint.CHAT, body)

    async def completions(self, body: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """OpenAI (legacy) completion; streams like ``chat``."""
        return await self._python_reply(Endpoint.COMPLETIONS, body)

    async def models(self) -> dict[str, Any]:
        """OpenAI's model list."""
        return self._directory.list_cards()

    async def _python_reply(
        self, endpoint: Endpoint, body: dict[str, Any]
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        reply = await self._forward(endpoint, body)
        if reply.head.status != 200:
            raise OpenAIError.from_body(reply.head.status, reply.head.body or {})
        if reply.head.body is not None:
            return reply.head.body
        return reply.chunks()

    # HTTP API.

    async def _http_reply(self, endpoint: Endpoint, request: Request) -> Response:
        reply = await self._forward(endpoint, parse_json_body(await request.body()))
        if reply.head.body is not None:
            return JSONResponse(reply.head.body, status_code=reply.head.status)
        return StreamingResponse(reply.sse(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def http_chat(self, request: Request) -> Response:
        return await self._http_reply(Endpoint.CHAT, request)

    @app.post("/v1/completions")
    async def http_completions(self, request: Request) -> Response:
        return await self._http_reply(Endpoint.COMPLETIONS, request)

    @app.get("/v1/models")
    async def http_models(self) -> dict[str, Any]:
        return self._directory.list_cards()

    @app.get("/v1/models/{model:path}")
    async def http_model(self, model: str) -> dict[str, Any]:
        return self._directory.card(model)

    @app.get("/health")
    async def http_health(self) -> dict[str, str]:
        return {"status": "ok"}
