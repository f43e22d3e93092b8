"""The OpenAI-compatible ingress deployment.

HTTP clients reach the FastAPI routes; Python callers use the same logic through the
deployment handle (``handle.chat.remote(body)``, ``handle.options(stream=True)
.chat.remote({..., "stream": True})``). Either way a request is forwarded to the
deployment of the model named by its ``model`` field, as a stream on the Serve handle (see
``sllm_ray.protocol``), waiting at most ``request_wait_timeout_s`` for a replica. Admin
routes (``/v1/admin/...`` and ServerlessLLM's) go to the model manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from sllm_ray import metrics
from sllm_ray.api import sllm_compat
from sllm_ray.api.accounting import RequestLog
from sllm_ray.api.auth import KeyStore, required_role
from sllm_ray.api.error_responses import (
    allowed_methods,
    as_openai_error,
    error_response,
    install_error_handlers,
)
from sllm_ray.api.model_directory import ModelDirectory, Route
from sllm_ray.api.request_body import check_request, parse_json_body, read_body
from sllm_ray.api.resume import StreamResume, resumable, sse
from sllm_ray.api.schemas import (
    Adapter,
    AdapterDeleted,
    AdapterList,
    AdminModel,
    AdminModelList,
    ChatCompletionBody,
    Completion,
    CompletionBody,
    Deleted,
    EmbeddingBody,
    Embeddings,
    Health,
    ModelCard,
    ModelList,
    Readiness,
    Status,
    Warmed,
    errors,
    event_stream,
    generation_body,
    install_openapi,
    request_body,
)
from sllm_ray.api.sllm_compat import SllmDelete, SllmDeploy
from sllm_ray.config import AdapterConfig, AppConfig, ModelConfig, ModelUpdate, names_subresource
from sllm_ray.control.failures import StartFailure
from sllm_ray.control.rhythm import WarmRequest
from sllm_ray.errors import (
    BadRequestError,
    ConflictError,
    DeadlineExceededError,
    EngineLostError,
    MethodNotAllowedError,
    ModelNotFoundError,
    ModelStartFailedError,
    OpenAIError,
    PayloadTooLargeError,
    ReplicaLeavingError,
    RequestTimeoutError,
    ServiceUnavailableError,
    TooManyRequestsError,
    carried_error,
    internal_error,
    unwrap,
)
from sllm_ray.log_setup import configure_logging
from sllm_ray.names import model_app_name
from sllm_ray.protocol import SSE_DONE, Accepted, Endpoint, ResponseHead, parse_sse_event

logger = logging.getLogger(__name__)

# How often the ingress re-reads the registry; a model registered or deleted through
# another ingress replica is seen within this time (through this one: at once).
REFRESH_S = 1.0
# A request to a model in its failed-start backoff has the list refreshed first when it is
# older than this: a fix (a PATCH) may have reached the manager through another ingress
# replica since this one's last poll. (At most 20 refreshes a second while clients insist.)
FAILURE_RECHECK_S = 0.05
# Last-use reports to the manager are sent at most this often per model.
TOUCH_S = 1.0
# How often a request retries a model whose deployment Serve has not taken yet.
UNAVAILABLE_RETRY_S = 0.1
# How long GET /ready waits for the model manager (busy or still starting: not ready).
READY_TIMEOUT_S = 5.0
# How long a read of the model manager (the model list, a model, the nodes) waits for it;
# a change waits longer: a registration may check engine arguments in a process that
# imports vLLM first (seconds), or wait for a restarting manager.
MANAGER_TIMEOUT_S = 10.0
MANAGER_CHANGE_TIMEOUT_S = 120.0
REPLICA_HEADER = "x-sllm-replica"
# The body model each generation endpoint validates (vLLM validates the rest).
_BODY_MODELS = {
    Endpoint.CHAT: ChatCompletionBody,
    Endpoint.COMPLETIONS: CompletionBody,
    Endpoint.EMBEDDINGS: EmbeddingBody,
}
# The error responses of the routes that take a body.
ERRORS_GENERATION = errors(400, 404, 408, 413, 429, 503)
ERRORS_ADMIN_BODY = errors(400, 404, 408, 409, 413, 422)

app = FastAPI(title="sllm_ray", description="Serverless LLM serving on Ray Serve")
install_error_handlers(app)
install_openapi(app)


async def _deadline(request: Request, respond: Awaitable[Response]) -> Response:
    """The route's response by the app's deadline, else a 504: a request whose handling
    stalls is failed, rather than holding its connection and a slot of the ingress."""
    deadline_s: float = request.app.state.deadline_s
    try:
        async with asyncio.timeout(deadline_s) as timer:
            return await respond
    except TimeoutError:
        if not timer.expired():  # the route's own, not the deadline
            raise
        error = DeadlineExceededError(deadline_s, "request_deadline_s")
        return error_response(as_openai_error(error, f"{request.method} {request.url.path}"))


@app.middleware("http")
async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """API keys and the body size limit, before any route runs."""
    keys: KeyStore = request.app.state.keys
    try:
        # Serve mounts the app under its route prefix (the ASGI root_path).
        path = request.url.path.removeprefix(request.scope.get("root_path", "").rstrip("/"))
        keys.check(request.headers.get("authorization"), required_role(path or "/"))
        length = request.headers.get("content-length")
        limit: int = request.app.state.max_body
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLargeError(f"request body is {length} bytes; the limit is {limit}")
    except OpenAIError as exc:
        return error_response(exc)
    return await _deadline(request, call_next(request))


# Continues a stream: the reply to a legacy completion of the stream's tokens so far.
Restart = Callable[[dict[str, Any]], Awaitable["_Reply"]]


def _engine_lost(exc: BaseException) -> bool:
    """A failure a new engine can recover from: the replica died, or its engine host did
    (the replica's 503)."""
    if isinstance(exc, RayActorError | ActorUnavailableError):
        return True
    return isinstance(carried_error(exc), EngineLostError)


class _NotDeployedYet(Exception):
    """Serve lists no deployment for the model's handle: a deploy it has not taken yet (a
    retry after a failed start redeploys an application still being deleted)."""


def _unavailable_here(exc: BaseException) -> bool:
    """The request found no replica to take it: Serve has no deployment for the handle, or
    the replica reached is leaving after a failed start (``OpenAIIngress._unavailable``)."""
    return isinstance(exc, DeploymentUnavailableError | _NotDeployedYet) or isinstance(
        carried_error(exc), ReplicaLeavingError
    )


class _Reply:
    """A forwarded request once its replica answered: the head and, for a stream, the rest."""

    def __init__(
        self,
        replica: str,
        head: ResponseHead,
        events: DeploymentResponseGenerator,
        log: RequestLog,
        deadline: tuple[float, str],
        resume: tuple[StreamResume, Restart] | None = None,
    ) -> None:
        self.replica = replica
        self.head = head
        self.events = events
        self.log = log
        self.deadline = deadline  # (seconds, setting): the longest a stream may go without an event
        self._resume = resume
        self._continuing = False  # the events are the continuation's
        self._cut: OpenAIError | None = None  # why the server ended the stream (``cut``)
        self.on_end: Callable[[], None] | None = None  # called once when a stream ends
        if head.body is not None:  # whole: accounted for now
            if head.status == 200:
                log.whole(head.body)
            log.close(head.status)

    @property
    def headers(self) -> dict[str, str]:
        """Which replica answered: for operators following a request through the logs."""
        return {REPLICA_HEADER: self.replica}

    async def sse(self) -> AsyncIterator[str]:
        """The stream's events; a failure mid-stream becomes a final SSE error event, since
        the HTTP status is already sent."""
        try:
            while (event := await self._next()) is not None:
                event = self._rewrite(event)
                self.log.event(event)
                if event == SSE_DONE:  # complete: a client that leaves on it is no 499
                    self.log.close(200)
                yield event
            self.log.close(200)
        except Exception as exc:  # the replica died, the engine failed, or a cut
            err = self._cut or as_openai_error(exc, f"stream of model {self.log.model} interrupted")
            self.log.close(err.status)
            yield f"data: {error_response(err).body.decode()}\n\n"
            yield SSE_DONE
        finally:
            self.log.close(499)  # the client went away mid-stream (nginx's code for it)
            self.events.cancel()
            if self.on_end is not None:
                self.on_end()
                self.on_end = None

    def cut(self, error: OpenAIError) -> None:
        """End the stream early (the drain's bound): its replica stops generating, and the
        client gets ``error`` as the last event."""
        self._cut = error
        self.events.cancel()

    async def _next(self) -> str | None:
        """The next event; once per request, a stream whose engine was lost goes on from a
        new one (``api/resume.py``)."""
        try:
            return await self._next_event()
        except Exception as exc:
            body = self._resume[0].body() if self._resume is not None and _engine_lost(exc) else None
            if body is None:
                raise
            tracker, restart = self._resume  # type: ignore[misc]
            tracker.resumed = True
            logger.warning(
                "stream of model %s lost its engine after %d tokens (%s): resuming",
                self.log.model,
                len(tracker.generated),
                type(exc).__name__,
            )
            continued = await restart(body)
            if continued.head.body is not None:  # refused whole: the error ends the stream
                raise OpenAIError.from_body(continued.head.status, continued.head.body) from exc
            self.events.cancel()
            self.events, self.replica, self._continuing = continued.events, continued.replica, True
            metrics.count("sllm_resumed_streams_total", {"model": self.log.model})
            return await self._next_event()

    async def _next_event(self) -> str | None:
        """The stream's next event (None at its end), by the deadline: a stalled stream ends."""
        try:
            return await asyncio.wait_for(self.events.__anext__(), self.deadline[0])
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise DeadlineExceededError(*self.deadline) from None

    def _rewrite(self, event: str) -> str:
        """An event of a resumable stream as the client gets it: token ids noted (and
        removed unless asked for); a continuation's in the first reply's shape."""
        if self._resume is None or event == SSE_DONE:
            return event
        chunk = parse_sse_event(event)
        if not chunk or "error" in chunk:
            return event
        tracker = self._resume[0]
        return sse(tracker.continue_chunk(chunk) if self._continuing else tracker.outgoing(chunk))

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
    """Routes OpenAI requests to the per-model deployments; admin requests to the manager."""

    async def __init__(self, config: AppConfig, manager: DeploymentHandle) -> None:
        configure_logging()
        self._config = config
        self._manager = manager
        context = serve.get_replica_context()
        self._owner = context.app_name
        self._replica = context.replica_id.unique_id
        self._directory: ModelDirectory[DeploymentHandle] = ModelDirectory(self._model_handle)
        self._touched: dict[str, float] = {}
        self._waiting: dict[str, int] = {}  # model -> requests waiting for a replica
        # Models whose replicas failed to start (the manager's book, as of the last poll),
        # and an event per model that wakes the requests waiting for it on a new failure.
        self._failures: dict[str, StartFailure] = {}
        self._failed: dict[str, asyncio.Event] = {}
        self._routing_seq = (0, 0)  # of the routing snapshot applied last: manager incarnation, count
        self._refreshed_at = 0.0  # monotonic
        # The drain before a shutdown (``control/drain.py``): refusing new generation
        # requests once the manager says so; the requests in flight, streams until their end.
        self._draining = False
        self._in_flight = 0
        self._streams: set[_Reply] = set()  # open, for the drain to cut at its bound
        keys = KeyStore.load(config.api_keys_file)
        if not keys.enabled:
            logger.warning(
                "NO API KEYS CONFIGURED: every route, the admin API included, is open to anyone "
                "who can reach this port. Set api_keys_file or SLLM_RAY_API_KEYS."
            )
        app.state.keys = keys
        app.state.max_body = config.max_request_body_bytes
        app.state.deadline_s = config.request_deadline_s
        await self._refresh()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    def _model_handle(self, config: ModelConfig) -> DeploymentHandle:
        app_name = model_app_name(self._owner, config.model)
        try:
            return serve.get_deployment_handle(config.deployment_name, app_name=app_name)
        except KeyError as exc:
            raise _NotDeployedYet(str(exc)) from None

    async def _ask(self, call: Any, timeout_s: float = MANAGER_TIMEOUT_S) -> Any:
        """The manager's answer to ``call``, its error raised. A manager that is down or
        restarting (a control-plane fault) is a 503 within ``timeout_s``, not a hang or a
        500; the model routes keep serving meanwhile, from the last model list."""
        try:
            reply = await asyncio.wait_for(call, timeout_s)
        except (TimeoutError, RayActorError) as exc:
            raise ServiceUnavailableError(
                "the model manager is unavailable (restarting?); retry", self._config.retry_after_s
            ) from exc
        return unwrap(reply)

    async def _refresh(self) -> None:
        report = self._manager.routing.remote(self._replica, self._in_flight, self._draining)
        seq, models, failures, draining, cut = await self._ask(report)
        incarnation, count = seq
        if incarnation == self._routing_seq[0] and count < self._routing_seq[1]:
            return  # overtaken by a newer one of the same manager (refreshes overlap)
        self._routing_seq = seq
        self._refreshed_at = time.monotonic()
        if draining and not self._draining:
            logger.info("draining: refusing new requests; %d in flight", self._in_flight)
        self._draining = draining
        if cut and self._streams:
            logger.warning("drain_timeout_s passed: cutting %d streams", len(self._streams))
            error = ServiceUnavailableError(
                "the server is shutting down: the stream outlasted drain_timeout_s; retry",
                self._config.retry_after_s,
            )
            for stream in list(self._streams):
                stream.cut(error)
        self._directory.sync(models)
        self._note_failures(failures)

    def _note_failures(self, failures: dict[str, StartFailure]) -> None:
        """Take the manager's failed starts; a new error fails the requests waiting for its
        model now, and drops the model's handle (its application was removed; the next
        attempt deploys a new one)."""
        for model, failure in failures.items():
            known = self._failures.get(model)
            if known is None or (known.seq, known.failed_at) != (failure.seq, failure.failed_at):
                self._directory.drop_handle(model)
                event = self._failed.pop(model, None)
                if event is not None:
                    event.set()
        self._failures = dict(failures)

    def _start_failed(self, model: str) -> OpenAIError:
        """The error for a request to a model whose start failed."""
        failure = self._failures.get(model)
        if failure is None:  # cleared meanwhile (a PATCH): the client may retry at once
            return ServiceUnavailableError(f"model `{model}` failed to start; retry", 1)
        return ModelStartFailedError(model, failure.error, failure.retry_after_s(time.time()))

    async def _gate(self, model: str) -> None:
        """A model that failed to start: within its backoff the request gets the error at
        once; after it, the request has the manager start the next attempt and waits for it."""
        failure = self._failures.get(model)
        if failure is None or failure.retrying:
            return
        if time.time() < failure.retry_at and time.monotonic() - self._refreshed_at > FAILURE_RECHECK_S:
            with contextlib.suppress(ServiceUnavailableError):
                await self._refresh()
            failure = self._failures.get(model)
            if failure is None or failure.retrying:
                return
        if time.time() < failure.retry_at:
            raise self._start_failed(model)
        failure = await self._ask(self._manager.retry.remote(model), MANAGER_CHANGE_TIMEOUT_S)
        if failure is None:
            self._failures.pop(model, None)
        else:
            self._failures[model] = failure
            if not failure.retrying:  # the redeploy itself failed
                raise self._start_failed(model)

    async def _accepted(
        self, config: ModelConfig, events: DeploymentResponseGenerator, wait_s: float, deadline: float
    ) -> Accepted | ResponseHead | str:
        """The reply's first message, by ``deadline`` (the wait bound, ``wait_s``, from the
        request's arrival); a failed start of the model meanwhile ends the wait at once
        with its cause. Either way the Serve call is cancelled (it leaves Serve's queue)."""
        first = asyncio.ensure_future(events.__anext__())
        failed = asyncio.ensure_future(self._failed.setdefault(config.model, asyncio.Event()).wait())
        try:
            await asyncio.wait(
                {first, failed}, timeout=deadline - time.monotonic(), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            failed.cancel()
            if not first.done():
                first.cancel()
                events.cancel()
                # Its outcome (cancelled) is of no interest: not "never retrieved".
                first.add_done_callback(lambda task: task.cancelled() or task.exception())
        if first.done() and not first.cancelled():
            return first.result()
        if failed.done() and not failed.cancelled():
            raise self._start_failed(config.model)
        raise ServiceUnavailableError(
            f"model `{config.model}` has no replica ready after {wait_s:g} s; retry later",
            self._config.retry_after_s,
        )

    async def _refresh_forever(self) -> None:
        manager_down = False
        while True:
            await asyncio.sleep(REFRESH_S)
            # Ray's export drops a gauge not set again within two of its export intervals:
            # the waiting counts are set each second, not only when they change.
            for model, waiting in self._waiting.items():
                metrics.set_gauge("sllm_queued_requests", {"model": model}, waiting)
            try:
                await self._refresh()
            except ServiceUnavailableError:
                if not manager_down:  # once per outage
                    logger.warning("model manager unavailable: routing by the last model list")
                manager_down = True
            except Exception:
                logger.exception("could not refresh the model list")
            else:
                if manager_down:
                    logger.info("model manager back: model list refreshed")
                manager_down = False

    async def _resolve(self, endpoint: Endpoint, body: dict[str, Any]) -> Route:
        name = body.get("model")
        if isinstance(name, str) and name and name not in self._directory:
            # Registered a moment ago through another replica? With the manager down, the
            # last list answers (a 404 here; only admin routes are 503 meanwhile).
            with contextlib.suppress(ServiceUnavailableError):
                await self._refresh()
        route = self._directory.route(body)
        if route.config.pooling != endpoint.pooling:
            kind = (
                "an embedding model (vLLM's pooling runner)" if route.config.pooling else "a generative model"
            )
            served = "/v1/embeddings only" if route.config.pooling else "chat and completions, not embeddings"
            raise BadRequestError(f"model `{route.served}` is {kind}: it serves {served}", param="model")
        return route

    def _touch(self, model: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(model, 0.0) >= TOUCH_S:
            self._touched[model] = now
            self._manager.touch.remote(model)

    def _request_deadline(self, config: ModelConfig) -> tuple[float, str]:
        """A request's deadline (seconds, the setting that set it): the model's, within the app's."""
        app_s = self._config.request_deadline_s
        if config.request_deadline_s is not None and config.request_deadline_s < app_s:
            return config.request_deadline_s, f"model {config.model}'s request_deadline_s"
        return app_s, "request_deadline_s"

    async def _forward(self, endpoint: Endpoint, body: dict[str, Any], log: RequestLog) -> _Reply:
        """The request routed to its model's replica, answered (its head) by its deadline."""
        route = await self._resolve(endpoint, body)
        log.model = route.served
        log.base = route.config.model if route.adapter is not None else None
        deadline = self._request_deadline(route.config)
        try:
            async with asyncio.timeout(deadline[0]) as timer:
                return await self._routed(endpoint, route, log, deadline)
        except TimeoutError:
            if not timer.expired():
                raise
            raise DeadlineExceededError(*deadline) from None

    async def _routed(
        self,
        endpoint: Endpoint,
        route: Route,
        log: RequestLog,
        request_deadline: tuple[float, str],
        *,
        continuation: bool = False,
    ) -> _Reply:
        config = route.config
        max_tokens = None if endpoint.pooling else config.max_tokens_limit
        body = check_request(route.body, config.request_limits, max_tokens)
        tracker = None
        if not continuation and config.resume_streams and resumable(endpoint, body):
            tracker = StreamResume(endpoint, body)
            body = tracker.forwarded_body()
        try:
            replica, head, events = await self._dispatch(endpoint, route, body, log)
        except Exception as exc:
            if not _engine_lost(exc) or continuation or not config.resume_streams:
                raise
            # Nothing was sent yet: once more, on the replica's new engine or a new replica.
            logger.warning("request to model %s lost its engine before replying: retrying", config.model)
            replica, head, events = await self._dispatch(endpoint, route, body, log)
        resume = None
        if tracker is not None:

            async def restart(rest: dict[str, Any]) -> _Reply:
                again = dataclasses.replace(route, body=rest)
                return await self._routed(
                    Endpoint.COMPLETIONS, again, log, request_deadline, continuation=True
                )

            resume = (tracker, restart)
        return _Reply(replica, head, events, log, request_deadline, resume)

    async def _dispatch(
        self, endpoint: Endpoint, route: Route, body: dict[str, Any], log: RequestLog
    ) -> tuple[str, ResponseHead, DeploymentResponseGenerator]:
        """The request sent to a replica of its model, once one accepted it: which one, the
        reply's head and the rest of its events."""
        config = route.config
        # Serve's multiplexed model id: its router prefers a replica holding the adapter.
        options: dict[str, Any] = {"stream": True}
        if route.adapter is not None:
            options["multiplexed_model_id"] = route.adapter.adapter
        self._touch(config.model)
        wait_s = config.request_wait_timeout_s or self._config.request_wait_timeout_s
        deadline = time.monotonic() + wait_s
        retry_after = self._config.retry_after_s
        self._waiting[config.model] = self._waiting.get(config.model, 0) + 1
        metrics.set_gauge("sllm_queued_requests", {"model": config.model}, self._waiting[config.model])
        try:
            while True:
                await self._gate(config.model)
                try:
                    _, handle = self._directory.get(config.model)  # a new one after a failed start
                    events: DeploymentResponseGenerator = handle.options(**options).generate.remote(
                        endpoint, body, route.adapter
                    )
                    accepted = await self._accepted(config, events, wait_s, deadline)
                    break
                except Exception as exc:
                    if not _unavailable_here(exc):
                        raise
                    await self._unavailable(config.model, deadline)
        except BackPressureError:
            raise TooManyRequestsError(
                f"model `{config.model}` has {config.max_queued_requests} requests waiting; retry later",
                retry_after,
            ) from None
        finally:
            self._waiting[config.model] -= 1
            metrics.set_gauge("sllm_queued_requests", {"model": config.model}, self._waiting[config.model])
        assert isinstance(accepted, Accepted), accepted
        log.start_kind = accepted.start_kind
        try:
            head = accepted.head or await events.__anext__()
        except BaseException:  # the deadline, the client gone, the engine lost: the replica stops too
            events.cancel()
            raise
        if head.status >= 500 and head.status != 503 and head.body is not None:
            # An engine's own fault: its message may name processes and files; the log keeps it.
            error = internal_error(logger, f"engine of {config.model} answered {head.status}: {head.body}")
            head = ResponseHead(error.status, error.body())
        return accepted.replica, head, events

    async def _unavailable(self, model: str, deadline: float) -> None:
        """Serve has no deployment for the model's handle, or the replica reached failed to
        start and is leaving: the model's start failed and this ingress had not heard of it
        yet (the cause, at once), or a newer deployment is on its way (registered or fixed a
        moment ago, or the next attempt after a failed start's backoff, while the failed
        replica is still up: try again, within the wait)."""
        await self._refresh()
        failure = self._failures.get(model)
        if failure is not None and not failure.retrying:
            raise self._start_failed(model)
        if time.monotonic() + UNAVAILABLE_RETRY_S > deadline:
            raise ServiceUnavailableError(
                f"model `{model}` is not available; retry later", self._config.retry_after_s
            )
        await asyncio.sleep(UNAVAILABLE_RETRY_S)

    async def _accounted(self, endpoint: Endpoint, body: dict[str, Any] | Request) -> _Reply:
        """Forward a generation request (an HTTP one's body parsed here), accounting for it
        whatever happens."""
        log = RequestLog("unknown", endpoint.value)  # an unknown model is not a label
        self._in_flight += 1
        streaming = False  # a stream counts as in flight until its end (``_Reply.sse``)
        try:
            if self._draining:
                raise ServiceUnavailableError(
                    "the server is shutting down (draining); retry", self._config.retry_after_s
                )
            data = await self._body(body) if isinstance(body, Request) else body
            reply = await self._forward(endpoint, generation_body(_BODY_MODELS[endpoint], data), log)
            if reply.head.body is None:
                streaming = True
                self._streams.add(reply)
                reply.on_end = lambda: self._stream_ended(reply)
            return reply
        except Exception as exc:
            error = carried_error(exc)
            log.close(error.status if error is not None else 500)
            raise
        finally:  # cancelled too (the client gone)
            if not streaming:
                self._in_flight -= 1

    def _stream_ended(self, reply: _Reply) -> None:
        self._streams.discard(reply)
        self._in_flight -= 1

    # Python API (through the deployment handle).

    async def chat(self, body: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """OpenAI chat completion. With ``"stream": true`` (and ``handle.options(stream=True)``)
        an async iterator of chunk objects; otherwise the response object."""
        return await self._python_reply(Endpoint.CHAT, body)

    async def completions(self, body: dict[str, Any]) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        """OpenAI (legacy) completion; streams like ``chat``."""
        return await self._python_reply(Endpoint.COMPLETIONS, body)

    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        """OpenAI embeddings, of a model registered with vLLM's pooling runner."""
        reply = await self._python_reply(Endpoint.EMBEDDINGS, body)
        assert isinstance(reply, dict)
        return reply

    async def models(self) -> dict[str, Any]:
        """OpenAI's model list."""
        await self._refresh()
        return self._directory.list_cards()

    async def _python_reply(
        self, endpoint: Endpoint, body: dict[str, Any]
    ) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        reply = await self._accounted(endpoint, body)
        if reply.head.status != 200:
            raise OpenAIError.from_body(reply.head.status, reply.head.body or {})
        if reply.head.body is not None:
            return reply.head.body
        return reply.chunks()

    # OpenAI HTTP API.

    async def _body(self, request: Request) -> dict[str, Any]:
        """The request's JSON body, read within its size and time bounds."""
        timeout_s = self._config.request_body_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                raw = await read_body(request.stream(), self._config.max_request_body_bytes)
        except TimeoutError:
            raise RequestTimeoutError(
                f"request body not received within {timeout_s:g} s (request_body_timeout_s)"
            ) from None
        return parse_json_body(raw)

    async def _http_reply(self, endpoint: Endpoint, request: Request) -> Response:
        reply = await self._accounted(endpoint, request)
        if reply.head.body is not None:
            return JSONResponse(reply.head.body, status_code=reply.head.status, headers=reply.headers)
        return StreamingResponse(reply.sse(), media_type="text/event-stream", headers=reply.headers)

    @app.post(
        "/v1/chat/completions",
        response_model=Completion,
        responses={**event_stream(Completion), **ERRORS_GENERATION},
        openapi_extra=request_body(ChatCompletionBody),
    )
    async def http_chat(self, request: Request) -> Response:
        return await self._http_reply(Endpoint.CHAT, request)

    @app.post(
        "/v1/completions",
        response_model=Completion,
        responses={**event_stream(Completion), **ERRORS_GENERATION},
        openapi_extra=request_body(CompletionBody),
    )
    async def http_completions(self, request: Request) -> Response:
        return await self._http_reply(Endpoint.COMPLETIONS, request)

    @app.post(
        "/v1/embeddings",
        response_model=Embeddings,
        responses=ERRORS_GENERATION,
        openapi_extra=request_body(EmbeddingBody),
    )
    async def http_embeddings(self, request: Request) -> Response:
        return await self._http_reply(Endpoint.EMBEDDINGS, request)

    @app.get("/v1/models", response_model=ModelList, responses=errors())
    async def http_models(self) -> dict[str, Any]:
        return self._directory.list_cards()

    @app.get("/v1/models/{model:path}", response_model=ModelCard, responses=errors(404))
    async def http_model(self, model: str) -> dict[str, Any]:
        if model not in self._directory:
            await self._refresh()
        return self._directory.card(model)

    @app.get("/health", response_model=Health, responses=errors())
    async def http_health(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", response_model=Readiness, responses=errors(503))
    async def http_ready(self) -> JSONResponse:
        """200 once a first request can cold-start in the documented time (the registry
        reconciled, every node's engine host pool ready); 503 saying what is missing."""
        try:
            body = await asyncio.wait_for(self._manager.readiness.remote(), READY_TIMEOUT_S)
        except TimeoutError:
            waiting = f"the model manager did not answer within {READY_TIMEOUT_S:g} s"
            body = {"ready": False, "waiting_for": [waiting]}
        if body["ready"]:
            return JSONResponse(body)
        error = ServiceUnavailableError(
            "not ready: " + "; ".join(body["waiting_for"]), self._config.retry_after_s
        )
        return JSONResponse({**body, **error.body()}, status_code=503, headers=error.headers)

    # Admin HTTP API.

    async def _changed(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Route by the registry as the admin call left it, before answering it (not at the
        next poll): a model registered, fixed (its failed start cleared) or deleted. The
        snapshot is newer than any poll still on its way, which is then dropped."""
        await self._refresh()
        return reply

    async def _register(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._changed(
            await self._ask(self._manager.register.remote(body), MANAGER_CHANGE_TIMEOUT_S)
        )

    async def _update(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._changed(
            await self._ask(self._manager.update.remote(name, patch), MANAGER_CHANGE_TIMEOUT_S)
        )

    async def _delete(self, name: str) -> dict[str, Any]:
        self._directory.remove(name)  # new requests get 404 from now on
        return await self._changed(
            await self._ask(self._manager.delete.remote(name), MANAGER_CHANGE_TIMEOUT_S)
        )

    async def _describe(self, name: str | None = None) -> list[dict[str, Any]]:
        return await self._ask(self._manager.describe.remote(name))

    @app.post(
        "/v1/admin/models",
        status_code=201,
        response_model=AdminModel,
        responses=ERRORS_ADMIN_BODY,
        openapi_extra=request_body(ModelConfig),
    )
    async def admin_register(self, request: Request) -> JSONResponse:
        return JSONResponse(await self._register(await self._body(request)), status_code=201)

    @app.get("/v1/admin/models", response_model=AdminModelList, responses=errors())
    async def admin_list(self) -> dict[str, Any]:
        return {"object": "list", "data": await self._describe()}

    # Adapters. Declared before the model routes, whose ``{name:path}`` would take these paths.

    async def _add_adapters(
        self, base: str, adapters: list[dict[str, Any]], replace: bool
    ) -> list[dict[str, Any]]:
        return await self._changed(
            await self._ask(
                self._manager.add_adapters.remote(base, adapters, replace), MANAGER_CHANGE_TIMEOUT_S
            )
        )

    async def _delete_adapters(self, base: str, names: list[str]) -> list[dict[str, Any]]:
        for name in names:  # new requests get 404 from now on; those in flight finish
            with contextlib.suppress(ModelNotFoundError):
                if self._directory.card(name).get("parent") == base:
                    self._directory.remove(name)
        return await self._changed(
            await self._ask(self._manager.delete_adapters.remote(base, names), MANAGER_CHANGE_TIMEOUT_S)
        )

    @staticmethod
    def _adapter_list(base: str, adapters: list[dict[str, Any]]) -> dict[str, Any]:
        return {"object": "list", "data": [{**a, "parent": base} for a in adapters]}

    @app.post(
        "/v1/admin/models/{base:path}/adapters",
        status_code=201,
        response_model=Adapter,
        responses=ERRORS_ADMIN_BODY,
        openapi_extra=request_body(AdapterConfig),
    )
    async def admin_add_adapter(self, base: str, request: Request) -> JSONResponse:
        """Serve a LoRA adapter (``{"adapter": name, "source": folder or hub id}``) on ``base``."""
        body = await self._body(request)
        added = await self._add_adapters(base, [body], replace=False)
        (adapter,) = [a for a in added if a["adapter"] == body.get("adapter")]
        return JSONResponse({**adapter, "parent": base}, status_code=201)

    @app.get("/v1/admin/models/{base:path}/adapters", response_model=AdapterList, responses=errors(404))
    async def admin_list_adapters(self, base: str) -> dict[str, Any]:
        return self._adapter_list(base, await self._ask(self._manager.list_adapters.remote(base)))

    @app.delete(
        "/v1/admin/models/{base:path}/adapters/{adapter:path}",
        response_model=AdapterDeleted,
        responses=errors(404),
    )
    async def admin_delete_adapter(self, base: str, adapter: str) -> dict[str, Any]:
        await self._delete_adapters(base, [adapter])
        return {"adapter": adapter, "parent": base, "deleted": True}

    @staticmethod
    def _model_path(name: str, request: Request) -> str:
        """``name`` of a ``{name:path}`` admin route, or a 405 where the path is one of a
        model's sub-resources (``a/adapters``, ``a/adapters/x``, ``a/warm``) and the method
        is not one that sub-resource takes: no model has such a name."""
        if names_subresource(name):
            raise MethodNotAllowedError(request.method, allowed_methods(request))
        return name

    @app.get("/v1/admin/models/{name:path}", response_model=AdminModel, responses=errors(404))
    async def admin_get(self, name: str, request: Request) -> dict[str, Any]:
        (described,) = await self._describe(self._model_path(name, request))
        return described

    @app.patch(
        "/v1/admin/models/{name:path}",
        response_model=AdminModel,
        responses=ERRORS_ADMIN_BODY,
        openapi_extra=request_body(ModelUpdate),
    )
    async def admin_update(self, name: str, request: Request) -> dict[str, Any]:
        return await self._update(self._model_path(name, request), await self._body(request))

    @app.delete("/v1/admin/models/{name:path}", response_model=Deleted, responses=errors(404, 409))
    async def admin_delete(self, name: str, request: Request) -> dict[str, Any]:
        return await self._delete(self._model_path(name, request))

    @app.post(
        "/v1/admin/models/{name:path}/warm",
        response_model=Warmed,
        responses=ERRORS_ADMIN_BODY,
        openapi_extra=request_body(WarmRequest),
    )
    async def admin_warm(self, name: str, request: Request) -> dict[str, Any]:
        """Start replicas now and hold them (``{"replicas": n, "for_s": s}``)."""
        return await self._ask(
            self._manager.warm.remote(name, await self._body(request)), MANAGER_CHANGE_TIMEOUT_S
        )

    # ServerlessLLM-compatible admin API.

    @app.post(
        "/register",
        response_model=AdminModel,
        responses=ERRORS_ADMIN_BODY,
        openapi_extra=request_body(SllmDeploy),
    )
    async def sllm_register(self, request: Request) -> dict[str, Any]:
        """ServerlessLLM's: a new model; for a model registered already, the adapters it gives
        (``sllm deploy --lora-adapters``) added to it."""
        body = await self._body(request)
        config = sllm_compat.register_body(body)
        try:
            return await self._register(config)
        except ConflictError:
            name, adapters = sllm_compat.adapters(body)
            if not adapters or name not in self._directory:
                raise
            await self._add_adapters(name, adapters, replace=True)
            (described,) = await self._describe(name)
            return described

    @app.post(
        "/update",
        response_model=AdminModel,
        responses=ERRORS_ADMIN_BODY,
        openapi_extra=request_body(SllmDeploy),
    )
    async def sllm_update(self, request: Request) -> dict[str, Any]:
        body = await self._body(request)
        name, patch = sllm_compat.update_patch(body)
        _, adapters = sllm_compat.adapters(body)
        if adapters:
            await self._add_adapters(name, adapters, replace=True)
        if patch or not adapters:
            return await self._update(name, patch)
        (described,) = await self._describe(name)
        return described

    @app.post(
        "/delete",
        response_model=Deleted,
        responses=ERRORS_ADMIN_BODY,
        openapi_extra=request_body(SllmDelete),
    )
    async def sllm_delete(self, request: Request) -> dict[str, Any]:
        name, adapters = sllm_compat.deleted(await self._body(request))
        if adapters is None:
            return await self._delete(name)
        await self._delete_adapters(name, adapters)
        return {"model": name, "deleted": True}

    @app.get("/status", response_model=Status, responses=errors())
    async def status(self) -> dict[str, Any]:
        models, nodes = await asyncio.gather(self._describe(), self._ask(self._manager.nodes.remote()))
        for model in models:  # waiting for a replica, in this ingress replica
            model["queued"] = self._waiting.get(model["model"], 0)
        return {"models": models, "nodes": nodes}
