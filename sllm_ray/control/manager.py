"""The model manager: the one writer of the registry and of the model applications.

Each registered model runs as its own Serve application ``<app>-model-...`` (``<app>`` is
the sllm_ray application's name) holding the deployment ``model:<name>``, so models are
added, changed and removed at run time without touching the others (a Serve application's
set of deployments is fixed when it is built).
The manager runs as a single-replica deployment beside the ingress; on start it seeds the
registry from the config and redeploys every registered model, which is how models come
back after the Serve application or the whole Ray cluster restarts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import ray
from pydantic import ValidationError
from ray import serve

from sllm_ray import metrics, ray_compat
from sllm_ray.config import (
    AdapterConfig,
    AppConfig,
    FitError,
    ModelConfig,
    ModelUpdate,
    effective_engine_kwargs,
    engine_workers,
    fit_problem,
    position_limit,
)
from sllm_ray.control.adapters import checked_adapter
from sllm_ray.control.drain import DrainBook, DrainStatus
from sllm_ray.control.failures import StartFailure, StartFailures
from sllm_ray.control.nodes import NodeServices
from sllm_ray.control.placement import Estimate
from sllm_ray.control.readiness import pool_ready, readiness
from sllm_ray.control.registry import (
    DELETING,
    DuplicateModelError,
    InvalidRecord,
    InvalidRecordError,
    ModelRecord,
    Registry,
    UnknownModelError,
    UnstorableConfigError,
)
from sllm_ray.control.rhythm import Rhythm, WarmHold, WarmRequest
from sllm_ray.control.sources import (
    SourceError,
    SourceNotFound,
    check_engine_paths,
    check_hub_model,
    resolve_source,
)
from sllm_ray.engine.records import EngineStarted
from sllm_ray.errors import (
    ConflictError,
    ErrorReply,
    ModelNotFoundError,
    OpenAIError,
    SourceNotFoundError,
    UnprocessableError,
    internal_error,
    validation_error,
)
from sllm_ray.log_setup import configure_logging
from sllm_ray.names import ON_HEAD, model_app_name, model_app_prefix
from sllm_ray.serving.model_server import build_model_deployment

logger = logging.getLogger(__name__)


def _refused(exc: SourceError, param: str | None = None) -> OpenAIError:
    """A refused source or path as the client sees it: a 404 when it names nothing, else a 422."""
    kind = SourceNotFoundError if isinstance(exc, SourceNotFound) else UnprocessableError
    return kind(str(exc), param=param or exc.param)


# How often the manager looks for new nodes and reads what each store holds.
NODE_SYNC_S = 5.0
# How long readiness waits for the nodes' pools to report (a pool still starting answers
# only once it has started: not ready meanwhile).
POOL_REPORT_S = 2.0
# A replica's start error is kept (and sent to clients) up to this length.
MAX_ERROR_CHARS = 4000
# A deleted model's application is gone once its replicas stopped (their requests in flight
# finish within the deployment's graceful shutdown timeout, 30 s): how often to look, and
# for how long at most (Serve's own bound).
DELETE_POLL_S = 0.1
DELETE_WAIT_S = 60.0
# Serve applies a deploy in its next control-loop pass, so a status read this soon after
# one may still show the previous version's DEPLOY_FAILED. Serve gives up only after
# several failed replica starts (seconds), so waiting this long delays no real failure.
SERVE_SETTLE_S = 2.0
# A warm hold's end is handed to Serve this long after it, so the hold reads as over.
RELEASE_MARGIN_S = 0.05

P = ParamSpec("P")
R = TypeVar("R")


def _client_errors(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | ErrorReply]]:
    """Return an API method's ``OpenAIError`` (``ErrorReply``) instead of raising it, logged
    once without a traceback: Serve logs whatever a replica's method raises at ERROR, with
    its traceback, and a client's mistake is not a server error."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | ErrorReply:
        try:
            return await method(*args, **kwargs)
        except OpenAIError as exc:
            level = logging.ERROR if exc.status >= 500 else logging.INFO
            logger.log(level, "%s refused (%d): %s", method.__name__, exc.status, exc.message)
            return ErrorReply(exc)

    return wrapper


@ray.remote(num_cpus=0)
class _EngineArgsChecker:
    """The engine's own check of a model's engine arguments (vLLM's argument parsing), in a
    process of its own: the manager must not import vLLM (seconds of start, hundreds of MB).
    Started at the first registration with engine arguments and kept, vLLM imported once."""

    def __init__(self, engine_cls: str) -> None:
        from sllm_ray.engine.interface import engine_class

        self._engine = engine_class(engine_cls)

    def problem(self, engine_kwargs: dict[str, Any]) -> str | None:
        return self._engine.engine_args_problem(engine_kwargs)


def _steerable(config: ModelConfig) -> bool:
    """Serve applies a node preference to every replica and waits for the preferred node
    while it is busy: only a model with one replica at most is steered. Serve takes no
    fallback for a placement group, so models with several workers are not either."""
    return config.autoscaling.max_replicas == 1 and engine_workers(config.engine_kwargs) == 1


def _preference(config: ModelConfig, estimates: list[Estimate]) -> str | None:
    """The node a model's replicas are steered to: the best estimate's, when it can be."""
    return estimates[0].node_id if estimates and _steerable(config) else None


def _node_shapes() -> list[dict[str, float]]:
    """Ray resource totals of every alive node and of every node type the cluster's
    autoscaler may add (when it publishes its config: ``ray up``, KubeRay)."""
    shapes = [dict(node["Resources"]) for node in ray.nodes() if node["Alive"]]
    # Ray's only view of the autoscaler's node types; private, so read defensively.
    try:
        cluster = ray_compat.autoscaler_cluster_config()
    except Exception:
        logger.debug("no autoscaler config readable", exc_info=True)
        cluster = None
    if cluster is not None:
        shapes += [dict(group.resources) for group in cluster.node_group_configs if group.max_count != 0]
    return shapes


def _check_max_model_len(config: ModelConfig) -> None:
    """``max_model_len`` within the model's own limit, for a model in a local folder (a
    hub model's config is not fetched for this; vLLM checks when it builds the engine)."""
    length = config.engine_kwargs.get("max_model_len")
    folder = Path(config.model_source)
    if not isinstance(length, int) or isinstance(length, bool) or not folder.is_absolute():
        return
    try:
        hf_config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return
    limit = position_limit(hf_config) if isinstance(hf_config, dict) else None
    if limit is not None and length > limit:
        raise UnprocessableError(
            f"engine_kwargs.max_model_len is {length}, beyond the model's {limit} positions "
            "(max_position_embeddings in its config.json)",
            param="engine_kwargs.max_model_len",
        )


class ModelManager:
    """Registers, updates and deletes models; keeps Serve in line with the registry."""

    def __init__(self, config: AppConfig, registry_path: str, base_dir: str, data_dir: str) -> None:
        configure_logging()
        ray_compat.serialize_deploy_callables_one_at_a_time()
        self._config = config
        self._base = Path(base_dir)
        self._registry = Registry(registry_path)
        self._owner = serve.get_replica_context().app_name
        self._nodes = NodeServices(self._owner, config, Path(data_dir), self._engine_started)
        self._nodes.ensure()
        # One Serve API call at a time: deploys and deletes of one model must not interleave.
        self._serve_lock = asyncio.Lock()
        # One change of a model's adapters at a time (a read, then a write of its record).
        self._adapters_lock = asyncio.Lock()
        self._last_used: dict[str, float] = {}
        # Model -> the node its replicas are steered to (placement's choice when deployed).
        self._preferred: dict[str, str | None] = {}
        self._args_checker: ray.actor.ActorHandle | None = None
        # Model -> the config its replicas are built with (engine memory derived), as
        # deployed: a replica's failed start names its fingerprint.
        self._deployed: dict[str, ModelConfig] = {}
        # Model -> its replicas that reported an engine (``_engine_started``): a start that
        # fails beside one of them is that replica's, not the model's. Cleared when the
        # model has no running replica.
        self._serving: dict[str, set[str]] = {}
        # Model -> when it was last handed to Serve (monotonic).
        self._deployed_at: dict[str, float] = {}
        # Numbers the routing snapshots, so the ingress can drop one older than what it has:
        # this manager's incarnation (its start, in ns) and a count. A restarted manager
        # counts from 0 again, and an ingress comparing counts alone took every snapshot
        # of the new one for a stale one and no longer learnt of new models.
        self._routing_seq = (time.time_ns(), 0)
        # The drain before a shutdown (``control/drain.py``).
        self._drain = DrainBook()
        self._failures = StartFailures(
            config.failed_start_backoff_s,
            config.failed_start_backoff_max_s,
            config.failed_starts_before_failed,
        )
        # Explicit warm-ups and the adaptive keep-alive's arrivals (``control/rhythm.py``).
        self._rhythm = Rhythm()
        # Model -> the task that hands Serve the model's config again when its hold ends.
        self._releases: dict[str, asyncio.Task[None]] = {}
        self._prewarms: dict[str, asyncio.Task[None]] = {}  # model -> its next pre-warm's timer
        # Model -> the removal of its application after a failed start, until done.
        self._stopping: dict[str, asyncio.Task[None]] = {}
        seeded = self._registry.seed([self._checked(m) for m in config.models])
        logger.info("registry %s: seeded %s", registry_path, seeded or "nothing new")
        loop = asyncio.get_running_loop()
        self._reconciled = loop.create_task(self._reconcile())
        self._node_watch = loop.create_task(self._watch_nodes())

    def __del__(self) -> None:
        """Serve's graceful shutdown of the manager (the app deleted or redeployed) stops
        the per-node services with it; a manager that dies leaves them serving."""
        nodes = getattr(self, "_nodes", None)
        if nodes is not None:
            nodes.close()

    def _app(self, model: str) -> str:
        return model_app_name(self._owner, model)

    # Validation.

    def _checked(self, config: ModelConfig) -> ModelConfig:
        """The config with its source resolved, once its source and the paths among its engine
        arguments lie inside the model roots and it runs no remote code unless allowed."""
        if config.engine_kwargs.get("trust_remote_code") and not self._config.allow_trust_remote_code:
            raise UnprocessableError(
                "engine_kwargs.trust_remote_code runs the model's own code in the engine hosts; "
                "this app does not allow it (allow_trust_remote_code)",
                param="engine_kwargs.trust_remote_code",
            )
        roots, allow_hub = self._config.model_roots, self._config.allow_hub_models
        try:
            source = resolve_source(config.model_source, roots, allow_hub=allow_hub, base=self._base)
            check_engine_paths(config.engine_kwargs, roots, allow_hub=allow_hub, base=self._base)
        except SourceError as exc:
            raise _refused(exc) from None
        config = config.model_copy(update={"model_source": source})
        return config.model_copy(
            update={"adapters": [self._checked_adapter(a, config) for a in config.adapters]}
        )

    def _checked_adapter(self, adapter: AdapterConfig, base: ModelConfig) -> AdapterConfig:
        try:
            return checked_adapter(
                adapter,
                base,
                self._config.model_roots,
                allow_hub=self._config.allow_hub_models,
                base_dir=self._base,
            )
        except SourceError as exc:
            prefix = "" if exc.param.startswith("engine_kwargs") else "adapters."
            raise _refused(exc, prefix + exc.param) from None

    def _name_taken(self, name: str, base: str, param: str) -> None:
        """A 409 when ``name`` is another model's, or an adapter of a model other than
        ``base``: a request's ``model`` must name one thing."""
        for record in self._registry.list():
            if record.name == name and name != base:
                raise ConflictError(f"`{name}` is already a model", param=param)
            if record.name != base and record.config.adapter(name):
                raise ConflictError(f"`{name}` is already an adapter of model `{record.name}`", param=param)

    async def _check_engine_kwargs(self, config: ModelConfig) -> None:
        """Engine arguments as the engine's own argument parsing takes them (vLLM's)."""
        if not config.engine_kwargs:
            return
        for attempt in range(2):
            if self._args_checker is None:
                self._args_checker = _EngineArgsChecker.options(resources=ON_HEAD).remote(
                    self._config.engine_cls
                )
            try:
                problem = await self._args_checker.problem.remote(config.engine_kwargs)
                break
            except ray.exceptions.RayActorError:
                # Gone (killed, out of memory; its node lost, when an older one ran
                # elsewhere): another one, once.
                self._args_checker = None
                if attempt:
                    raise
        if problem is not None:
            raise UnprocessableError(f"engine_kwargs: {problem}", param="engine_kwargs")

    def _engine_config(self, config: ModelConfig) -> ModelConfig:
        """The config replicas are built with: the engine memory bounded (``config.
        effective_engine_kwargs``). The registry keeps the user's."""
        kwargs = effective_engine_kwargs(config, self._config.engine_sleepers_per_node)
        return config.model_copy(update={"engine_kwargs": kwargs})

    async def _check_fit(self, config: ModelConfig) -> None:
        """Refuse a model no node can hold (as far as the nodes and node types are known)."""
        try:
            engine = self._engine_config(config)
            problem = fit_problem(config, engine.engine_kwargs, await asyncio.to_thread(_node_shapes))
        except FitError as exc:
            problem = exc
        if problem is not None:
            raise UnprocessableError(problem.message, param=problem.param)

    async def _validated(self, data: dict[str, Any] | ModelConfig) -> ModelConfig:
        try:
            config = data if isinstance(data, ModelConfig) else ModelConfig.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc.errors(), UnprocessableError, every=True) from None
        config = self._checked(config)
        if not Path(config.model_source).is_absolute():  # a hub id (folders are resolved absolute)
            try:
                await asyncio.to_thread(check_hub_model, config.model_source)
            except SourceError as exc:
                raise _refused(exc) from None
        await self._check_engine_kwargs(config)
        _check_max_model_len(config)
        await self._check_fit(config)
        return config

    # Serve.

    async def _deploy(self, config: ModelConfig) -> None:
        """Hand the model's application to Serve, and have the stores prepare its checkpoint
        in the background. Returns once Serve has taken it, not once replicas run: a model
        may have none (scale to zero) or some that cannot be placed yet, and an admin call
        must not wait on either."""
        engine = self._rhythm.serve_config(self._engine_config(config), time.time())
        previous = self._deployed.get(config.model)
        self._failures.begin(config.model, engine.engine_fingerprint())
        self._deployed[config.model] = engine
        self._deployed_at[config.model] = time.monotonic()
        self._nodes.prepare(engine)
        estimates = self._nodes.placement(engine)
        if previous is not None and previous.engine_fingerprint() == engine.engine_fingerprint():
            # The same engine: Serve updates its replicas in place unless their options
            # change, and a node preference is one; a new one waits for zero (``_steer``).
            preferred = self._preferred.get(config.model)
        else:
            preferred = _preference(engine, estimates)
        await self._run_app(engine, preferred, estimates)

    async def _run_app(self, config: ModelConfig, preferred: str | None, estimates: list[Estimate]) -> None:
        """``serve.run`` the model's application, its replicas steered to ``preferred``."""
        app = build_model_deployment(config, self._owner, preferred)
        target = serve.RunTarget(app, name=self._app(config.model), route_prefix=None)
        async with self._serve_lock:
            await asyncio.to_thread(serve.run_many, [target], wait_for_applications_running=False)
        self._preferred[config.model] = preferred
        logger.info(
            "deployed model %s (engine %s); placement: %s",
            config.model,
            config.engine_fingerprint(),
            ", ".join(f"{e.node_id[:8]} {e.tier} {e.seconds:.2f}s" for e in estimates) or "no node yet",
        )

    async def _steer(self, records: list[ModelRecord], apps: dict[str, Any]) -> None:
        """Point each model at zero replicas at the node where its next replica would be
        ready soonest (a sleeping engine, its checkpoint in DRAM, ...). Only at zero: a
        new preference is a new replica option, which Serve applies by replacing replicas.
        The checkpoint is not prepared again: only the replicas' node changes."""
        for record in records:
            engine = self._deployed.get(record.name)
            if (
                engine is None  # not deployed (yet), or being deleted
                or self._failures.get(record.name) is not None  # its application is (being) removed
                # Not steered, and rightly: no estimate to make.
                or (not _steerable(engine) and self._preferred.get(record.name) is None)
                or self._replicas(apps, record)
            ):
                continue
            estimates = self._nodes.placement(engine)
            preferred = _preference(engine, estimates)
            if preferred == self._preferred.get(record.name) or (preferred is None and _steerable(engine)):
                continue  # where it is, or no node known yet
            if preferred is None:
                logger.info("placement: replicas of %s no longer steered (more than one)", record.name)
            else:
                best = estimates[0]
                logger.info(
                    "placement: next replica of %s on node %s (%s, about %.2f s to ready)",
                    record.name,
                    best.node_id,
                    best.tier,
                    best.seconds,
                )
            await self._run_app(engine, preferred, estimates)

    async def _delete_app(self, app_name: str, wait: bool = True) -> None:
        """Delete a model's application; ``wait``: until its replicas are gone (in-flight
        requests finish first, within the graceful shutdown timeout)."""
        async with self._serve_lock:
            await asyncio.to_thread(serve.delete, app_name, _blocking=False)
            # Serve's own wait looks once a second: a DELETE took a second more than it had to.
            deadline = time.monotonic() + DELETE_WAIT_S
            while wait and app_name in (await asyncio.to_thread(serve.status)).applications:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"application {app_name} was not deleted within {DELETE_WAIT_S:.0f} s")
                await asyncio.sleep(DELETE_POLL_S)
        logger.info("removed model application %s", app_name)

    async def _reconcile(self) -> None:
        """Bring Serve in line with the registry after a (re)start."""
        records = self._registry.list_all()
        # A record that fails to load is skipped (listed as invalid): its application too.
        wanted = {self._app(r.name) for r in records if isinstance(r, ModelRecord) and r.state != DELETING}
        for record in records:
            try:
                if record.state == DELETING:
                    await self._delete_app(self._app(record.name))
                    self._registry.remove(record.name)
                elif isinstance(record, InvalidRecord):
                    logger.error(
                        "skipped model %s, its stored config is invalid: %s", record.name, record.reason
                    )
                else:
                    await self._deploy(record.config)
            except Exception:
                logger.exception("could not restore model %s", record.name)
        prefix = model_app_prefix(self._owner)
        stray = [n for n in serve.status().applications if n.startswith(prefix) and n not in wanted]
        for app_name in stray:
            await self._delete_app(app_name)
        logger.info("reconciled %d models, removed %d stray model apps", len(records), len(stray))

    async def _watch_nodes(self) -> None:
        """New nodes get their pool and store; what each store holds goes to the registry."""
        while True:
            await asyncio.sleep(NODE_SYNC_S)
            try:
                self._nodes.ensure()
                await self._nodes.refresh()
                records = self._registry.list()
                self._registry.set_placements({r.name: self._nodes.tiers(r.config) for r in records})
                polled_at = time.monotonic()
                apps = (await asyncio.to_thread(serve.status)).applications
                self._nodes.record_metrics()
                for record in records:
                    running = self._replicas(apps, record).get("RUNNING", 0)
                    metrics.set_gauge("sllm_running_replicas", {"model": record.name}, running)
                    if not running:
                        self._serving.pop(record.name, None)
                    self._check_serve_gave_up(record, apps, polled_at)
                await self._steer(records, apps)
                await self._keep_warm(records)
            except Exception:
                logger.exception("could not sync the per-node services")

    # Warm-ups and the adaptive keep-alive.

    async def _keep_warm(self, records: list[ModelRecord]) -> None:
        """Start the holds of adaptive models whose pre-warm time has come, and hand Serve
        the autoscaling of models whose adaptive windows moved (by more than a tenth)."""
        now = time.time()
        for record in records:
            deployed = self._deployed.get(record.name)
            if deployed is None or self._failures.get(record.name) is not None:
                continue
            hold = self._rhythm.prewarm_due(record.config, now)
            if hold is not None:
                logger.info("pre-warming %s until %.0f (adaptive keep-alive)", record.name, hold.until)
                await self._hold(record.config, hold)
                continue
            wanted = self._rhythm.serve_config(self._engine_config(record.config), now).autoscaling
            current = deployed.autoscaling
            moved = abs(wanted.keep_alive_s - current.keep_alive_s) > 0.1 * max(current.keep_alive_s, 1.0)
            if moved or wanted.min_replicas != current.min_replicas:
                await self._deploy(record.config)

    async def _hold(self, config: ModelConfig, hold: WarmHold) -> None:
        """Hold replicas until ``hold.until``, then hand Serve the model's own config again."""
        self._rhythm.hold(config.model, hold)
        await self._deploy(config)
        previous = self._releases.pop(config.model, None)
        if previous is not None:
            previous.cancel()
        self._releases[config.model] = asyncio.get_running_loop().create_task(
            self._release(config.model, hold)
        )

    async def _release(self, model: str, hold: WarmHold) -> None:
        await asyncio.sleep(max(0.0, hold.until - time.time()) + RELEASE_MARGIN_S)
        try:
            await self._deploy(self._get(model).config)
        except Exception:
            # The node sync hands Serve the config without the hold within NODE_SYNC_S.
            logger.exception("could not end the warm hold of model %s", model)

    @_client_errors
    async def warm(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start ``replicas`` now and hold them ``for_s`` seconds (``POST .../warm``)."""
        record = self._get(name)
        try:
            request = WarmRequest.model_validate(body)
        except ValidationError as exc:
            raise validation_error(exc.errors(), UnprocessableError, every=True) from None
        limit = record.config.autoscaling.max_replicas
        if request.replicas > limit:
            raise UnprocessableError(
                f"replicas: {request.replicas} is above the model's max_replicas ({limit})", param="replicas"
            )
        hold = WarmHold(request.replicas, time.time() + request.for_s, "requested")
        await self._hold(record.config, hold)
        return {"model": name, **hold.to_json()}

    # Failed starts.

    def _stop(self, model: str) -> None:
        """Remove the model's application, in the background: Serve would otherwise start
        replica after replica that fail the same way. Without waiting for its replicas
        (one still starting would hold it for the whole graceful shutdown timeout): a
        redeploy of an application being deleted takes it back in Serve."""
        if model not in self._stopping:
            task = asyncio.get_running_loop().create_task(self._remove_failed(model))
            self._stopping[model] = task
            task.add_done_callback(lambda _: self._stopping.pop(model, None))

    async def _remove_failed(self, model: str) -> None:
        try:
            await self._delete_app(self._app(model), wait=False)
        except Exception:
            # The next attempt's deploy replaces the application all the same.
            logger.exception("could not remove the application of model %s after its failed start", model)

    async def _stopped(self, model: str) -> None:
        """Wait for a removal ``_stop`` started (Serve has taken it), so a redeploy comes
        after it."""
        task = self._stopping.get(model)
        if task is not None:
            await asyncio.shield(task)

    def _engine_started(self, started: EngineStarted) -> None:
        """A replica has its first engine (its node's pool says so): the model starts, its
        failed starts are over. (Serve's running replica may still be building its engine.)"""
        deployed = self._deployed.get(started.model)
        if deployed is not None and deployed.engine_fingerprint() == started.fingerprint:
            self._serving.setdefault(started.model, set()).add(started.replica)
            self._failures.started(started.model)

    async def start_failed(self, model: str, fingerprint: str, message: str, replica: str) -> None:
        """Called by a replica whose first engine could not be had: the requests waiting
        for the model get ``message`` (through the ingress's next poll of ``routing``), and
        the model backs off (``control/failures.py``)."""
        deployed = self._deployed.get(model)
        if deployed is None or deployed.engine_fingerprint() != fingerprint:
            logger.info("ignored a failed start of %s: engine %s is not the one deployed", model, fingerprint)
            return
        apps = (await asyncio.to_thread(serve.status)).applications
        others = self._serving.get(model, set()) - {replica}
        if others and self._replicas(apps, self._registry.get(model)).get("RUNNING"):
            # Another replica serves the model: its requests go there, and Serve retries
            # this one (a node short of memory, say) as it does any replica.
            metrics.count("sllm_failed_starts_total", {"model": model})
            logger.warning("a replica of %s failed to start beside running ones: %s", model, message)
            return
        self._record_failure(model, fingerprint, message)

    def _check_serve_gave_up(self, record: ModelRecord, apps: dict[str, Any], polled_at: float) -> None:
        """Serve gives up on a deployment whose replicas failed to start several times in a
        row for a reason no replica reported (an import error, a lost engine host): the
        same failure, named by the last line of Serve's message (the exception). ``apps``
        was read at ``polled_at``: a status from before the model's last deploy (a PATCH
        that fixed it, meanwhile) is about the previous version."""
        engine = self._deployed.get(record.name)
        failure = self._failures.get(record.name)
        if engine is None or (failure is not None and not failure.retrying):
            return
        if polled_at < self._deployed_at.get(record.name, 0.0) + SERVE_SETTLE_S:
            return
        app = apps.get(self._app(record.name))
        deployment = app.deployments.get(record.config.deployment_name) if app else None
        if deployment is None or deployment.status.value != "DEPLOY_FAILED":
            return
        lines = [line.strip() for line in deployment.message.splitlines() if line.strip()]
        self._record_failure(
            record.name, engine.engine_fingerprint(), lines[-1] if lines else "Serve gave up"
        )

    def _record_failure(self, model: str, fingerprint: str, message: str) -> None:
        metrics.count("sllm_failed_starts_total", {"model": model})
        failure, ended = self._failures.record(model, fingerprint, message[:MAX_ERROR_CHARS], time.time())
        logger.warning(
            "model %s failed to start (%s, %d in a row; retried by a request after %.0f s): %s",
            model,
            failure.state,
            failure.failures,
            failure.retry_at - failure.failed_at,
            message,
        )
        if ended:
            self._stop(model)

    @_client_errors
    async def retry(self, model: str) -> StartFailure | None:
        """Start the next attempt of a model whose backoff is over (the ingress calls this
        for the first request after it); idempotent. The model's failure, if any remains."""
        record = self._get(model)
        if self._failures.due(model, time.time()):
            engine = self._engine_config(record.config)
            self._failures.begin(model, engine.engine_fingerprint())  # concurrent calls: one retry
            logger.info("retrying model %s after a failed start", model)
            try:
                await self._stopped(model)
                await self._deploy(record.config)
            except Exception as exc:
                logger.exception("could not redeploy model %s", model)
                self._failures.record(
                    model, engine.engine_fingerprint(), f"could not be deployed: {exc}", time.time()
                )
        return self._failures.get(model)

    # API.

    async def ready(self) -> None:
        await asyncio.shield(self._reconciled)

    @_client_errors
    async def register(self, data: dict[str, Any]) -> dict[str, Any]:
        config = await self._validated(data)
        self._name_taken(config.model, config.model, "model")
        for adapter in config.adapters:
            self._name_taken(adapter.adapter, config.model, "adapters")
        try:
            record = self._registry.add(config)
        except DuplicateModelError as exc:
            raise ConflictError(str(exc), param="model") from None
        except UnstorableConfigError as exc:
            raise UnprocessableError(str(exc)) from None
        try:
            await self._deploy(config)
        except Exception as exc:
            self._registry.remove(config.model)
            self._deployed.pop(config.model, None)
            raise internal_error(logger, f"could not deploy model {config.model}", exc) from None
        return record.to_json()

    @_client_errors
    async def update(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A PATCH; it also ends a failed model's backoff: the model is deployed again now."""
        current = self._lookup(name)
        try:
            update = ModelUpdate.model_validate(patch)
            # A record that no longer loads is fixed by a PATCH over its stored fields.
            config = update.apply(current.config if isinstance(current, ModelRecord) else current.stored)
        except ValidationError as exc:
            raise validation_error(exc.errors(), UnprocessableError, every=True) from None
        if config.model != name:
            raise UnprocessableError(f"model: a PATCH of `{name}` cannot rename it", param="model")
        config = await self._validated(config)
        before = self._deployed.get(name)
        self._failures.clear(name)
        await self._stopped(name)
        # Applied before it is stored: a config Serve refuses leaves the stored one in place.
        try:
            await self._deploy(config)
        except Exception as exc:
            error = internal_error(
                logger, f"could not deploy model {name}'s new config; kept the old one", exc
            )
            await self._restore(current)
            raise error from None
        try:
            record = self._registry.replace(config)
        except UnknownModelError:
            raise ModelNotFoundError(name) from None
        except UnstorableConfigError as exc:
            await self._restore(current)
            raise UnprocessableError(str(exc)) from None
        rolled = before is None or self._deployed[name].engine_fingerprint() != before.engine_fingerprint()
        return {**record.to_json(), "replicas_rolled": rolled}

    @_client_errors
    async def add_adapters(
        self, base: str, bodies: list[dict[str, Any]], replace: bool = False
    ) -> list[dict[str, Any]]:
        """Serve these adapters on ``base`` from now on (``replace``: a name it has already
        takes the new source, ServerlessLLM's way; else it is a 409). Replicas load an adapter
        at its first request: nothing is redeployed."""
        async with self._adapters_lock:
            config = self._get(base).config
            try:
                given = [AdapterConfig.model_validate(body) for body in bodies]
            except ValidationError as exc:
                raise validation_error(exc.errors(), UnprocessableError, every=True) from None
            adapters = {a.adapter: a for a in config.adapters}
            for adapter in given:
                if adapter.adapter in adapters and not replace:
                    raise ConflictError(
                        f"model `{base}` has an adapter `{adapter.adapter}` already", param="adapter"
                    )
                self._name_taken(adapter.adapter, base, "adapter")
                adapters[adapter.adapter] = self._checked_adapter(adapter, config)
            record = self._store_adapters(config, list(adapters.values()))
        return [a.model_dump() for a in record.config.adapters]

    @_client_errors
    async def delete_adapters(self, base: str, names: list[str]) -> list[dict[str, Any]]:
        """Serve these adapters no more (404 for one ``base`` does not have). Requests on them
        in flight finish: the engines keep an adapter until their LoRA cache drops it."""
        async with self._adapters_lock:
            config = self._get(base).config
            for name in names:
                if config.adapter(name) is None:
                    raise ModelNotFoundError(name)
            record = self._store_adapters(config, [a for a in config.adapters if a.adapter not in names])
        return [a.model_dump() for a in record.config.adapters]

    @_client_errors
    async def list_adapters(self, base: str) -> list[dict[str, Any]]:
        return [a.model_dump() for a in self._get(base).config.adapters]

    def _store_adapters(self, config: ModelConfig, adapters: list[AdapterConfig]) -> ModelRecord:
        try:
            record = self._registry.replace(config.model_copy(update={"adapters": adapters}))
        except UnknownModelError:
            raise ModelNotFoundError(config.model) from None
        if (deployed := self._deployed.get(config.model)) is not None:
            self._deployed[config.model] = deployed.model_copy(update={"adapters": adapters})
        return record

    async def _restore(self, record: ModelRecord | InvalidRecord) -> None:
        """Deploy the stored config again after a change that could not be applied."""
        if not isinstance(record, ModelRecord):
            self._deployed.pop(record.name, None)
            return
        try:
            await self._deploy(record.config)
        except Exception:
            logger.exception("could not redeploy model %s's stored config", record.name)

    @_client_errors
    async def delete(self, name: str) -> dict[str, Any]:
        """Stop routing to the model at once; in-flight requests finish (bounded by the
        deployment's graceful shutdown timeout) before its application goes."""
        try:
            record = self._registry.mark_deleting(name)
        except UnknownModelError:
            raise ModelNotFoundError(name) from None
        self._deployed.pop(name, None)
        self._deployed_at.pop(name, None)
        self._failures.clear(name)
        await self._stopped(name)
        await self._delete_app(self._app(name))
        if isinstance(record, ModelRecord):  # an invalid one prepared no checkpoints
            self._nodes.forget(record.config)
        self._registry.remove(name)
        self._preferred.pop(name, None)
        self._last_used.pop(name, None)
        self._rhythm.forget(name)
        for pending in (self._releases.pop(name, None), self._prewarms.pop(name, None)):
            if pending is not None:
                pending.cancel()
        return {"model": name, "deleted": True}

    def _replicas(self, apps: dict[str, Any], record: ModelRecord) -> dict[str, int]:
        """The model's replicas by state, from ``serve.status().applications``."""
        app = apps.get(self._app(record.name))
        deployment = app.deployments.get(record.config.deployment_name) if app else None
        return {str(k): v for k, v in deployment.replica_states.items() if v} if deployment else {}

    def _lookup(self, name: str) -> ModelRecord | InvalidRecord:
        try:
            record = self._registry.lookup(name)
        except UnknownModelError:
            raise ModelNotFoundError(name) from None
        if record.state == DELETING:
            raise ModelNotFoundError(name)
        return record

    def _record_or_none(self, name: str) -> ModelRecord | None:
        """The model's valid record, None when it is gone, going or invalid."""
        try:
            record = self._lookup(name)
        except ModelNotFoundError:
            return None
        return record if isinstance(record, ModelRecord) else None

    def _get(self, name: str) -> ModelRecord:
        record = self._lookup(name)
        if isinstance(record, InvalidRecord):
            raise UnprocessableError(
                f"{InvalidRecordError(record)}; fix it with a PATCH or DELETE it", param="model"
            )
        return record

    async def routing(
        self, ingress: str = "", in_flight: int = 0, refusing: bool = False
    ) -> tuple[tuple[int, int], list[ModelConfig], dict[str, StartFailure], bool, bool]:
        """What the ingress routes by (it polls this each second): the snapshot's number
        (this manager's incarnation, then a count that increases), the models requests may
        go to, once the restored ones are deployed (so an ingress never routes to an
        application that is not there yet), the models that failed to start, whether the app
        is draining and whether the drain's bound passed (streams still open are cut). The
        ingress reports its requests in flight, for the drain."""
        now = time.time()
        if ingress:
            self._drain.report(ingress, in_flight, refusing, now)
        await self.ready()
        self._routing_seq = (self._routing_seq[0], self._routing_seq[1] + 1)
        models = [r.config for r in self._registry.list() if r.state != DELETING]
        cut = self._drain.cutting(now, self._config.drain_timeout_s)
        return self._routing_seq, models, self._failures.all(), self._drain.draining, cut

    async def drain(self) -> DrainStatus:
        """Start the drain before a shutdown: the ingresses refuse new requests from their
        next poll, ``GET /ready`` is 503. Poll ``drain_status`` for its end."""
        if not self._drain.draining:
            logger.info("draining: new requests are refused; waiting for those in flight")
        self._drain.start(time.time())
        return self._drain.status(time.time())

    async def drain_status(self) -> DrainStatus:
        return self._drain.status(time.time())

    async def touch(self, name: str) -> None:
        self._last_used[name] = now = time.time()
        deployed = self._deployed.get(name)
        if deployed is not None:
            self._rhythm.observe(name, now, deployed.autoscaling.keep_alive_bin_s)
            if deployed.autoscaling.keep_alive == "adaptive":  # a fixed one never pre-warms
                self._schedule_prewarm(name)

    def _schedule_prewarm(self, name: str) -> None:
        """Start the model's pre-warm hold on time after this arrival: the node sync looks
        only every ``NODE_SYNC_S`` (5 s late at worst, a tenth of a 1-minute bin, and more
        than a whole bin of a replay compressed 20 times)."""
        pending = self._prewarms.pop(name, None)
        if pending is not None:
            pending.cancel()
        record = self._record_or_none(name)
        at = None if record is None else self._rhythm.prewarm_at(record.config)
        if at is not None:
            self._prewarms[name] = asyncio.get_running_loop().create_task(self._prewarm(name, at))

    async def _prewarm(self, name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        record = self._record_or_none(name)
        if record is None or self._failures.get(name) is not None:
            return
        hold = self._rhythm.prewarm_due(record.config, time.time())
        if hold is not None:
            logger.info("pre-warming %s until %.0f (adaptive keep-alive)", name, hold.until)
            await self._hold(record.config, hold)

    async def nodes(self) -> list[dict[str, Any]]:
        """Each node's engine hosts (``pool_ready``: can it hand out a host now) and what its
        checkpoint store holds."""
        return [
            {**node, "pool_ready": pool_ready(node["engine_hosts"])} for node in await self._nodes.status()
        ]

    async def readiness(self) -> dict[str, Any]:
        """``GET /ready``'s body (``control/readiness.py``)."""
        draining = self._drain.draining
        try:
            nodes = await asyncio.wait_for(self._nodes.status(), POOL_REPORT_S)
        except TimeoutError:
            body = readiness(self._reconciled.done(), [], draining)
            body["waiting_for"] = [f"the engine host pools did not report within {POOL_REPORT_S:g} s"]
            return body
        return readiness(self._reconciled.done(), nodes, draining)

    @_client_errors
    async def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registry records with their live state: replicas by state, last use, the engine
        arguments replicas are built with, a failed start."""
        records = [self._lookup(name)] if name is not None else self._registry.list_all()
        apps = serve.status().applications
        out = []
        for record in records:
            if isinstance(record, InvalidRecord):  # listed, so the operator can fix or delete it
                out.append(record.to_json())
                continue
            app = apps.get(self._app(record.name))
            deployment = app.deployments.get(record.config.deployment_name) if app else None
            replicas = self._replicas(apps, record)
            failure = self._failures.get(record.name)
            engine = self._deployed.get(record.name)
            out.append(
                {
                    **record.to_json(),
                    # active, deleting, or a failed start's failing / failed
                    "state": failure.state if failure is not None else record.state,
                    "start_failure": failure.to_json() if failure is not None else None,
                    "effective_engine_kwargs": engine.engine_kwargs if engine is not None else None,
                    "engine_fingerprint": engine.engine_fingerprint() if engine is not None else None,
                    "app": self._app(record.name),
                    "deployment_status": deployment.status.value if deployment else "NOT_DEPLOYED",
                    "replicas": replicas,
                    "last_used": self._last_used.get(record.name),
                    "warm_hold": hold.to_json()
                    if (hold := self._rhythm.held(record.name, time.time()))
                    else None,
                    "keep_alive_windows": windows.to_json()
                    if (windows := self._rhythm.windows(record.config))
                    else None,
                    "placement": {
                        "preferred_node": self._preferred.get(record.name),
                        "estimates": [e.to_json() for e in self._nodes.placement(engine or record.config)],
                    },
                    "checkpoint": {
                        "source": record.config.model_source,
                        "tiers": self._registry.placements(record.name),
                    },
                }
            )
        return out
