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
import logging
import time
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError
from ray import serve

from sllm_ray import metrics
from sllm_ray.config import AppConfig, ModelConfig, ModelUpdate, engine_workers
from sllm_ray.control.nodes import NodeServices
from sllm_ray.control.placement import Estimate
from sllm_ray.control.registry import (
    DELETING,
    DuplicateModelError,
    ModelRecord,
    Registry,
    UnknownModelError,
)
from sllm_ray.control.sources import SourceError, resolve_source
from sllm_ray.errors import ConflictError, ModelNotFoundError, UnprocessableError
from sllm_ray.log_setup import configure_logging
from sllm_ray.names import model_app_name, model_app_prefix
from sllm_ray.serving.model_server import build_model_deployment

logger = logging.getLogger(__name__)

# How often the manager looks for new nodes and reads what each store holds.
NODE_SYNC_S = 5.0


def validation_error(exc: ValidationError) -> UnprocessableError:
    """Pydantic's errors as one 422 naming every offending field."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err['msg']}" if loc else str(err["msg"]))
    first = exc.errors()[0].get("loc", ()) if exc.errors() else ()
    return UnprocessableError("; ".join(parts), param=".".join(str(p) for p in first) or None)


@ray.remote(num_cpus=0)
def _engine_arg_names() -> list[str]:
    from sllm_ray.engine.openai_engine import engine_arg_names

    return engine_arg_names()


def _steerable(config: ModelConfig) -> bool:
    """Serve applies a node preference to every replica and waits for the preferred node
    while it is busy: only a model with one replica at most is steered. Serve takes no
    fallback for a placement group, so models with several workers are not either."""
    return config.autoscaling.max_replicas == 1 and engine_workers(config.engine_kwargs) == 1


class ModelManager:
    """Registers, updates and deletes models; keeps Serve in line with the registry."""

    def __init__(self, config: AppConfig, registry_path: str, base_dir: str, data_dir: str) -> None:
        configure_logging()
        self._config = config
        self._base = Path(base_dir)
        self._registry = Registry(registry_path)
        self._owner = serve.get_replica_context().app_name
        self._nodes = NodeServices(self._owner, config, Path(data_dir))
        self._nodes.ensure()
        # One Serve API call at a time: deploys and deletes of one model must not interleave.
        self._serve_lock = asyncio.Lock()
        self._last_used: dict[str, float] = {}
        # Model -> the node its replicas are steered to (placement's choice when deployed).
        self._preferred: dict[str, str | None] = {}
        self._engine_args: asyncio.Future[list[str]] | None = None
        seeded = self._registry.seed([self._checked(m) for m in config.models])
        logger.info("registry %s: seeded %s", registry_path, seeded or "nothing new")
        loop = asyncio.get_running_loop()
        self._reconciled = loop.create_task(self._reconcile())
        self._node_watch = loop.create_task(self._watch_nodes())

    def _app(self, model: str) -> str:
        return model_app_name(self._owner, model)

    # Validation.

    def _checked(self, config: ModelConfig) -> ModelConfig:
        try:
            source = resolve_source(
                config.model_source,
                self._config.model_roots,
                allow_hub=self._config.allow_hub_models,
                base=self._base,
            )
        except SourceError as exc:
            raise UnprocessableError(str(exc), param="model_source") from None
        return config.model_copy(update={"model_source": source})

    async def _check_engine_kwargs(self, config: ModelConfig) -> None:
        if not config.engine_kwargs:
            return
        if self._engine_args is None:
            # vLLM is imported once, in a task, never in this process.
            self._engine_args = asyncio.ensure_future(_engine_arg_names.remote())
        known = set(await asyncio.shield(self._engine_args))
        unknown = sorted(set(config.engine_kwargs) - known)
        if unknown:
            raise UnprocessableError(
                f"engine_kwargs: unknown vLLM engine arguments {unknown}", param="engine_kwargs"
            )

    async def _validated(self, data: dict[str, Any] | ModelConfig) -> ModelConfig:
        try:
            config = data if isinstance(data, ModelConfig) else ModelConfig.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
        config = self._checked(config)
        await self._check_engine_kwargs(config)
        return config

    # Serve.

    async def _deploy(self, config: ModelConfig) -> None:
        """Hand the model's application to Serve, and have the stores prepare its checkpoint
        in the background. Returns once Serve has taken it, not once replicas run: a model
        may have none (scale to zero) or some that cannot be placed yet, and an admin call
        must not wait on either."""
        self._nodes.prepare(config)
        await self._run_app(config, self._nodes.placement(config))

    async def _run_app(self, config: ModelConfig, estimates: list[Estimate]) -> None:
        """``serve.run`` the model's application, its replicas steered to the best of
        ``estimates`` when the model can be steered."""
        preferred = estimates[0].node_id if estimates and _steerable(config) else None
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
            if record.state == DELETING or not _steerable(record.config) or self._replicas(apps, record):
                continue
            estimates = self._nodes.placement(record.config)
            if not estimates or estimates[0].node_id == self._preferred.get(record.name):
                continue
            best = estimates[0]
            logger.info(
                "placement: next replica of %s on node %s (%s, about %.2f s to ready)",
                record.name,
                best.node_id,
                best.tier,
                best.seconds,
            )
            await self._run_app(record.config, estimates)

    async def _delete_app(self, app_name: str) -> None:
        async with self._serve_lock:
            await asyncio.to_thread(serve.delete, app_name)
        logger.info("removed model application %s", app_name)

    async def _reconcile(self) -> None:
        """Bring Serve in line with the registry after a (re)start."""
        records = self._registry.list()
        wanted = {self._app(r.name) for r in records if r.state != DELETING}
        for record in records:
            try:
                if record.state == DELETING:
                    await self._delete_app(self._app(record.name))
                    self._registry.remove(record.name)
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
                apps = (await asyncio.to_thread(serve.status)).applications
                self._nodes.record_metrics()
                for record in records:
                    running = self._replicas(apps, record).get("RUNNING", 0)
                    metrics.set_gauge("sllm_running_replicas", {"model": record.name}, running)
                await self._steer(records, apps)
            except Exception:
                logger.exception("could not sync the per-node services")

    # API.

    async def ready(self) -> None:
        await asyncio.shield(self._reconciled)

    async def register(self, data: dict[str, Any]) -> dict[str, Any]:
        config = await self._validated(data)
        try:
            record = self._registry.add(config)
        except DuplicateModelError as exc:
            raise ConflictError(str(exc), param="model") from None
        try:
            await self._deploy(config)
        except Exception as exc:
            self._registry.remove(config.model)
            raise UnprocessableError(f"model could not be deployed: {exc}") from exc
        return record.to_json()

    async def update(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        current = self._get(name)
        try:
            update = ModelUpdate.model_validate(patch)
            config = update.apply(current.config)
        except ValidationError as exc:
            raise validation_error(exc) from None
        config = await self._validated(config)
        try:
            record = self._registry.replace(config)
        except UnknownModelError:
            raise ModelNotFoundError(name) from None
        rolled = config.engine_fingerprint() != current.config.engine_fingerprint()
        await self._deploy(config)
        return {**record.to_json(), "replicas_rolled": rolled}

    async def delete(self, name: str) -> dict[str, Any]:
        """Stop routing to the model at once; in-flight requests finish (bounded by the
        deployment's graceful shutdown timeout) before its application goes."""
        try:
            record = self._registry.mark_deleting(name)
        except UnknownModelError:
            raise ModelNotFoundError(name) from None
        await self._delete_app(self._app(name))
        self._nodes.forget(record.config)
        self._registry.remove(name)
        self._preferred.pop(name, None)
        self._last_used.pop(name, None)
        return {"model": name, "deleted": True}

    def _replicas(self, apps: dict[str, Any], record: ModelRecord) -> dict[str, int]:
        """The model's replicas by state, from ``serve.status().applications``."""
        app = apps.get(self._app(record.name))
        deployment = app.deployments.get(record.config.deployment_name) if app else None
        return {str(k): v for k, v in deployment.replica_states.items() if v} if deployment else {}

    def _get(self, name: str) -> ModelRecord:
        try:
            record = self._registry.get(name)
        except UnknownModelError:
            raise ModelNotFoundError(name) from None
        if record.state == DELETING:
            raise ModelNotFoundError(name)
        return record

    async def active_models(self) -> list[ModelConfig]:
        """The models requests may be routed to: once the restored ones are deployed, so an
        ingress never routes to an application that is not there yet."""
        await self.ready()
        return [r.config for r in self._registry.list() if r.state != DELETING]

    async def touch(self, name: str) -> None:
        self._last_used[name] = time.time()

    async def nodes(self) -> list[dict[str, Any]]:
        """Each node's engine hosts and what its checkpoint store holds."""
        return await self._nodes.status()

    async def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registry records with their live state: replicas by state, last use."""
        records = [self._get(name)] if name is not None else self._registry.list()
        apps = serve.status().applications
        out = []
        for record in records:
            app = apps.get(self._app(record.name))
            deployment = app.deployments.get(record.config.deployment_name) if app else None
            out.append(
                {
                    **record.to_json(),
                    "app": self._app(record.name),
                    "deployment_status": deployment.status.value if deployment else "NOT_DEPLOYED",
                    "replicas": self._replicas(apps, record),
                    "last_used": self._last_used.get(record.name),
                    "placement": {
                        "preferred_node": self._preferred.get(record.name),
                        "estimates": [e.to_json() for e in self._nodes.placement(record.config)],
                    },
                    "checkpoint": {
                        "source": record.config.model_source,
                        "tiers": self._registry.placements(record.name),
                    },
                }
            )
        return out
