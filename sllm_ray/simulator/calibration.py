"""The simulator's timings, measured on a real machine and kept in a file.

``calibration.json`` beside this module is the default; ``sllm-ray simulate --calibrate``
writes a new one on the machine it runs on: the store's tier bandwidths measured as each
store measures them when it starts (``store/bandwidth.py``), the cold-start phases from a
``benchmarks/cold_start.py`` result (``--cold-start-json``) and the warm TTFT from a
replay's (``--replay-json``), or the file's own when none is given.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sllm_ray.control.placement import DISK, DRAM, EngineTimings

DEFAULT_PATH = Path(__file__).with_name("calibration.json")


class Calibration(BaseModel):
    """Seconds and bytes per second; every start is Serve's part plus the engine's."""

    model_config = ConfigDict(extra="forbid")

    measured_on: str = Field(description="Where and when these were measured.")
    dram_bytes_per_s: float = Field(gt=0, description="Reading a checkpoint from the DRAM tier.")
    disk_bytes_per_s: float = Field(gt=0, description="Reading a checkpoint from the local disk.")
    network_bytes_per_s: float = Field(gt=0, description="Copying one from a peer or the source.")
    build_s: float = Field(ge=0, description="Building an engine on a prepared host, weights aside.")
    wake_s: float = Field(ge=0, description="Waking a sleeping engine.")
    replica_start_s: float = Field(
        ge=0, description="Serve's part of a start: seeing demand, the replica, readiness, routing."
    )
    plain_start_s: float = Field(
        ge=0, description="A start without prepared hosts: a fresh process imports vLLM and builds."
    )
    warm_ttft_s: float = Field(ge=0, description="Time to first token on a running replica.")
    prefill_s_per_token: float = Field(ge=0)
    decode_s_per_token: float = Field(ge=0)
    scale_down_lag_s: float = Field(
        ge=0, description="Serve's look-back period: the idle time before a keep-alive begins."
    )

    def engine_timings(self) -> EngineTimings:
        return EngineTimings(wake_s=self.wake_s, build_s=self.build_s)

    def bandwidth(self) -> dict[str, float]:
        return {DRAM: self.dram_bytes_per_s, DISK: self.disk_bytes_per_s, "network": self.network_bytes_per_s}


def load(path: str | Path = DEFAULT_PATH) -> Calibration:
    return Calibration.model_validate_json(Path(path).read_text())


def _phases(cold_start: dict[str, Any]) -> dict[str, float]:
    """Serve's part, the build and the wake from ``benchmarks/cold_start.py``'s p50 phases
    (seconds after the request): from host claimed to engine ready is the engine's (the
    build or the wake), the rest of the time to first token is Serve's."""
    cold, hot = cold_start["sllm_ray"], cold_start["sllm_ray_hot"]
    build = cold["phases_p50_s"]["engine_ready"] - cold["phases_p50_s"]["host_claimed"]
    wake = hot["phases_p50_s"]["engine_ready"] - hot["phases_p50_s"]["host_claimed"]
    return {
        "build_s": round(build, 3),
        "wake_s": round(wake, 3),
        "replica_start_s": round(cold["ttft_p50_s"] - build, 3),
        "plain_start_s": round(cold_start["baseline"]["ttft_p50_s"], 3),
        "warm_ttft_s": round(cold["warm_ttft_via_ingress_p50_s"], 4),
    }


def calibrate(
    base: Calibration,
    cold_start: dict[str, Any] | None,
    dram_dir: Path,
    replayed: dict[str, Any] | None = None,
) -> Calibration:
    """``base`` with this machine's bandwidths, the phases of ``cold_start`` if given, and
    the warm TTFT of ``replayed`` (a replay's result) if given: a replay's warm requests
    share the machine with the other models' starts and requests, which the simulator does
    not model, and a lone request in the cold-start benchmark does not see (0.028 s there,
    0.043 s for the warm requests of a replay of 8 models)."""
    from sllm_ray.store.bandwidth import measure  # torch: only for a calibration

    with tempfile.TemporaryDirectory() as disk_dir:
        bandwidth = measure(Path(disk_dir), dram_dir)
    update: dict[str, Any] = {
        "measured_on": f"{platform.node()} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}",
        "dram_bytes_per_s": round(bandwidth[DRAM]),
        "disk_bytes_per_s": round(bandwidth[DISK]),
    }
    if cold_start is not None:
        update.update(_phases(cold_start))
    if replayed is not None:
        warm = replayed["overall"]["warm"]["ttft_p50_s"]
        if warm is None:
            raise ValueError("the replay has no warm requests to calibrate warm TTFT from")
        update["warm_ttft_s"] = round(warm, 4)
    return base.model_copy(update=update)


def save(calibration: Calibration, path: str | Path) -> None:
    Path(path).write_text(json.dumps(calibration.model_dump(), indent=2) + "\n")
