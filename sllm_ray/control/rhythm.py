"""What the model manager asks of Serve so that a model is warm when it is wanted.

Two sources, both pure logic here (the manager applies the result as the model's Serve
autoscaling config, which Serve changes in place):

- an explicit warm-up (``POST /v1/admin/models/{model}/warm``): ``replicas`` held from now
  for ``for_s`` seconds, as a floor under the model's own ``min_replicas``;
- ``autoscaling.keep_alive: adaptive``: the model's windows from its idle-time histogram
  (``control/keep_alive.py``). A keep-alive window becomes Serve's keep-alive; a pre-warm
  window makes the replica go at once after a request (its engine sleeps on the node) and
  a hold of one replica start ``prewarm_s`` after the request, for ``keep_alive_s``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field

from sllm_ray.config import MAX_SECONDS, ModelConfig
from sllm_ray.control.keep_alive import IdleHistogram, Windows


class WarmRequest(BaseModel):
    """The body of ``POST /v1/admin/models/{model}/warm``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    replicas: int = Field(1, ge=1, description="Replicas to start now (at most the model's max_replicas).")
    for_s: float = Field(300.0, gt=0, le=MAX_SECONDS, description="How long to hold them.")


@dataclass(frozen=True)
class WarmHold:
    replicas: int
    until: float  # time.time()
    reason: str  # "requested" or "prewarm"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Model:
    histogram: IdleHistogram
    # The arrival whose idle period was pre-warmed already (one hold per idle period).
    prewarmed_after: float | None = None


class Rhythm:
    """Every model's arrivals and holds, as the manager saw them."""

    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}
        self._holds: dict[str, WarmHold] = {}

    def observe(self, model: str, at: float, bin_s: float) -> None:
        state = self._models.get(model)
        if state is None or state.histogram.bin_s != bin_s:
            state = self._models[model] = _Model(IdleHistogram(bin_s=bin_s))
        state.histogram.observe(at)

    def forget(self, model: str) -> None:
        self._models.pop(model, None)
        self._holds.pop(model, None)

    def hold(self, model: str, hold: WarmHold) -> None:
        self._holds[model] = hold

    def held(self, model: str, now: float) -> WarmHold | None:
        hold = self._holds.get(model)
        if hold is not None and hold.until <= now:
            del self._holds[model]
            return None
        return hold

    def windows(self, config: ModelConfig) -> Windows | None:
        """An adaptive model's windows (None: the model's keep-alive is fixed)."""
        if config.autoscaling.keep_alive != "adaptive":
            return None
        state = self._models.get(config.model)
        histogram = (
            state.histogram if state is not None else IdleHistogram(bin_s=config.autoscaling.keep_alive_bin_s)
        )
        return histogram.windows(config.autoscaling.keep_alive_s)

    def _next_prewarm(self, config: ModelConfig) -> tuple[_Model, float, Windows] | None:
        """An adaptive model's state, last arrival and windows, when it has a pre-warm."""
        windows, state = self.windows(config), self._models.get(config.model)
        if windows is None or windows.prewarm_s <= 0 or state is None:
            return None
        last = state.histogram.last_arrival
        return None if last is None else (state, last, windows)

    def prewarm_at(self, config: ModelConfig) -> float | None:
        """When the hold of an adaptive model's next pre-warm is due (``time.time()``): its
        pre-warm window after its last arrival; None without one."""
        upcoming = self._next_prewarm(config)
        if upcoming is None:
            return None
        _, last, windows = upcoming
        return last + windows.prewarm_s

    def prewarm_due(self, config: ModelConfig, now: float) -> WarmHold | None:
        """The hold to start now for an adaptive model whose pre-warm time has come."""
        upcoming = self._next_prewarm(config)
        if upcoming is None:
            return None
        state, last, windows = upcoming
        if state.prewarmed_after == last or now < last + windows.prewarm_s:
            return None
        state.prewarmed_after = last
        end = last + windows.prewarm_s + windows.keep_alive_s
        return WarmHold(1, end, "prewarm") if end > now else None

    def serve_config(self, config: ModelConfig, now: float) -> ModelConfig:
        """The config to hand Serve now: the hold's floor, the adaptive keep-alive."""
        scaling: dict[str, float | int] = {}
        update: dict[str, object] = {}
        windows = self.windows(config)
        if windows is not None:
            scaling["keep_alive_s"] = 0.0 if windows.prewarm_s > 0 else windows.keep_alive_s
            if not windows.keeps_engine_asleep:
                update["keep_asleep"] = False
        hold = self.held(config.model, now)
        if hold is not None:
            floor = min(hold.replicas, config.autoscaling.max_replicas)
            scaling["min_replicas"] = max(config.autoscaling.min_replicas, floor)
        if scaling:
            update["autoscaling"] = config.autoscaling.model_copy(update=scaling)
        return config.model_copy(update=update) if update else config
