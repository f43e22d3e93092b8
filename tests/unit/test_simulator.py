"""The simulator's event core on hand-computed cases: one node, one model, known arrivals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sllm_ray import cli
from sllm_ray.control.placement import DISK, DRAM, HOT
from sllm_ray.simulator.calibration import Calibration, calibrate, load, save
from sllm_ray.simulator.core import Cluster, Result, Simulation
from sllm_ray.simulator.policies import policies
from sllm_ray.workload.traces import Request

REPO = Path(__file__).resolve().parents[2]
SIZE = 4 * 10**9
# Round numbers: from disk 2 s of weights, from DRAM 0.4 s.
CAL = Calibration(
    measured_on="test",
    dram_bytes_per_s=1e10,
    disk_bytes_per_s=2e9,
    network_bytes_per_s=1e9,
    build_s=0.5,
    wake_s=0.1,
    replica_start_s=1.0,
    plain_start_s=5.0,
    warm_ttft_s=0.1,
    prefill_s_per_token=0.0,
    decode_s_per_token=0.0,
    scale_down_lag_s=0.0,
)
ARRIVALS = [0.0, 5.0, 30.0, 100.0]


def run(
    policy: str, arrivals: list[float] = ARRIVALS, gpus: int = 1, models: int = 1, keep_alive_s: float = 10.0
) -> Result:
    cluster = Cluster(nodes=1, gpus_per_node=gpus, keep_alive_s=keep_alive_s)
    names = [f"m{i}" for i in range(models)]
    sim = Simulation(policies(2)[policy], cluster, CAL, {n: SIZE for n in names})
    requests = [Request(at, names[i % models], 10, 10) for i, at in enumerate(arrivals)]
    return sim.run(requests, max(110.0, arrivals[-1] + 10))


def test_sllm_ray_cold_from_disk_then_warm_then_hot_from_its_sleeping_engine() -> None:
    result = run("sllm_ray")
    # 0: start from disk 1 + 0.5 + 2 = 3.5 s; 5: warm; idle from 5.1, gone at 15.1, asleep;
    # 30: hot 1 + 0.1; idle from 31.2, gone at 41.2; 100: hot again.
    assert result.ttfts == pytest.approx([3.6, 0.1, 1.2, 1.2])
    assert result.waits == pytest.approx([3.5, 1.1, 1.1])
    assert result.waited == 3 and result.starts == {DISK: 1, HOT: 2}
    assert result.gpu_seconds == pytest.approx(15.1 + 11.2 + 10.0)
    # The checkpoint in the DRAM tier from 0 on, the sleeping engine's weights 15.1-30, 41.2-100.
    assert result.dram_byte_seconds == pytest.approx(SIZE * (110 + 14.9 + 58.8))


def test_serverlessllm_starts_from_its_dram_tier_and_a_request_waits_on_a_start_under_way() -> None:
    result = run("serverlessllm")
    # 0: plain start 5 + 0.5 + 2 = 7.5 s, and the request at 5 waits for it (2.5 s);
    # idle from 7.6, gone at 17.6; 30 and 100 from DRAM: 5 + 0.5 + 0.4.
    assert result.ttfts == pytest.approx([7.6, 2.6, 6.0, 6.0])
    assert result.waited == 4 and result.starts == {DISK: 1, DRAM: 2}


def test_ray_serve_llm_starts_every_replica_from_the_source() -> None:
    result = run("ray_serve_llm")
    # 5 + 0.5 + 4 s over the network.
    assert result.ttfts == pytest.approx([9.6, 4.6, 9.6, 9.6])
    assert result.starts == {"remote": 3} and result.dram_byte_seconds == 0


def test_adaptive_keep_alive_prewarms_a_periodic_model() -> None:
    periodic = [600.0 * i for i in range(40)]
    fixed = run("sllm_ray", periodic, keep_alive_s=300.0)
    adaptive = run("sllm_ray_adaptive", periodic, keep_alive_s=300.0)
    assert fixed.waited == 40  # 300 s keep-alive, a request every 10 minutes: every one waits
    # Disk start at 0, then hot starts: 301.2 s loaded each (the last cut at the end, 10 s).
    assert fixed.gpu_seconds == pytest.approx(303.6 + 38 * 301.2 + 10)
    # After the 5 idle times the histogram needs (the 6th request), each request finds its
    # replica pre-warmed: unloaded at once (the 6th held 1.2 s), loaded 540 s after each
    # request's end until the next request's (58.9 s after the 6th, then 60 s each).
    assert adaptive.waited == 6
    assert adaptive.gpu_seconds == pytest.approx(303.6 + 4 * 301.2 + 1.2 + 58.9 + 33 * 60)
    # With a pre-warm its engine no longer sleeps between requests: each pre-warm loads from
    # the DRAM tier, and the engine's weights are not held in host memory across the gap.
    assert adaptive.starts == {DISK: 1, HOT: 5, DRAM: 34}
    # With a 10 s keep-alive those windows would hold the replica 9x as long as the fixed
    # one over its idle times, beyond the budget (keep_alive.BUDGET_FACTOR): fixed it stays.
    assert run("sllm_ray_adaptive", periodic).waited == 40


def test_a_request_no_gpu_can_take_is_rejected() -> None:
    result = run("sllm_ray", [0.0, 1.0], gpus=1, models=2)
    assert result.rejected == 1 and result.requests == 2


def test_the_sleeper_limit_evicts_the_least_recently_used_engine() -> None:
    # Three models, a limit of 2 asleep: the first model's engine is evicted and it restarts
    # from the DRAM tier (1 + 0.5 + 0.4 s).
    result = run("sllm_ray", [0.0, 20.0, 40.0, 60.0], gpus=1, models=3)
    assert result.starts == {DISK: 3, DRAM: 1}
    assert result.ttfts[-1] == pytest.approx(2.0)


def test_simulate_command_prints_one_json_object_per_policy(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--json", "simulate", "--nodes", "2", "--models", "6", "--duration", "600", "--seed", "3"]
    assert cli.main([*argv, "--policies", "sllm_ray,fma"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["policies"]) == {"sllm_ray", "fma"}
    assert {"ttft_p50_s", "ttft_p99_s", "cold_start_fraction", "gpu_seconds", "dram_gb_seconds"} <= set(
        out["policies"]["fma"]
    )
    assert cli.main([*argv, "--policies", "nope"]) == 1
    assert "unknown policies" in capsys.readouterr().err


def test_the_shipped_calibration_loads() -> None:
    assert load().replica_start_s > 0


def test_calibrate_takes_the_store_bandwidths_and_the_cold_start_phases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sllm_ray.store import bandwidth

    # The probe itself (64 MB written and read back) is the store's; here its answer.
    monkeypatch.setattr(bandwidth, "measure", lambda disk, dram: {"dram": 5e9, "disk": 1e9})
    cold_start = json.loads((REPO / "docs" / "benchmarks" / "cold_start.json").read_text())
    calibration = calibrate(load(), cold_start, tmp_path)
    phases = cold_start["sllm_ray"]["phases_p50_s"]
    assert calibration.build_s == round(phases["engine_ready"] - phases["host_claimed"], 3)
    assert calibration.replica_start_s == round(cold_start["sllm_ray"]["ttft_p50_s"] - calibration.build_s, 3)
    assert (calibration.dram_bytes_per_s, calibration.disk_bytes_per_s) == (5e9, 1e9)
    assert calibration.warm_ttft_s == round(cold_start["sllm_ray"]["warm_ttft_via_ingress_p50_s"], 4)
    save(calibration, tmp_path / "calibration.json")
    assert load(tmp_path / "calibration.json") == calibration
    # A replay's warm requests, when given, set warm TTFT: they see a machine as loaded as a replay.
    replayed = {"overall": {"warm": {"ttft_p50_s": 0.04912}}}
    assert calibrate(load(), cold_start, tmp_path, replayed).warm_ttft_s == 0.0491
    with pytest.raises(ValueError, match="no warm requests"):
        calibrate(load(), None, tmp_path, {"overall": {"warm": {"ttft_p50_s": None}}})
