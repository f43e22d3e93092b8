"""The benchmark plotting script turns each benchmark's JSON into PNG files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PHASES = {"demand_seen": 0.2, "replica_scheduled": 1.2, "engine_ready": 1.6}
COLD_START = {
    "speedup_p50": 16.1,
    "sllm_ray": {"ttft_p50_s": 1.8, "warm_ttft_p50_s": 0.0126, "phases_p50_s": PHASES},
    "sllm_ray_hot": {"ttft_p50_s": 1.3, "phases_p50_s": {**PHASES, "engine_woken": 1.25}},
    "baseline": {"ttft_p50_s": 29.2, "warm_ttft_p50_s": 0.0133, "phases_p50_s": {"engine_ready": 28.6}},
}
LOAD_BENCH = {
    "checkpoint_bytes": 1044471808,
    "copy_bandwidth_gbps": {"fresh_gbps": 0.57, "warm_gbps": 19.1},
    "default_safetensors_warm_cache": {"gbps": 0.61},
    "sllm_store_dram_engine_layout": {"gbps": 10.65},
}

BURST = {
    "benchmark": "burst",
    "sizes": [1, 4],
    "sllm_ray": {"1": {"p50_s": 1.9, "max_s": 1.9}, "4": {"p50_s": 12.0, "max_s": 31.5}},
    "baseline": {"1": {"p50_s": 30.0, "max_s": 30.0}, "4": {"p50_s": 60.0, "max_s": 75.0}},
    "target": {"n1_p50_s": 1.9, "failures": 0},
}


def _plot_module():
    spec = importlib.util.spec_from_file_location("plot", REPO / "benchmarks" / "plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_benchmark_result_becomes_png_files(tmp_path: Path) -> None:
    plot = _plot_module().plot
    written = plot(COLD_START, tmp_path) + plot(LOAD_BENCH, tmp_path) + plot(BURST, tmp_path)
    assert [p.name for p in written] == [
        "cold_start_ttft.png",
        "cold_start_phases.png",
        "load_bench.png",
        "burst.png",
    ]
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="not a result"):
        plot({"something": 1}, tmp_path)
