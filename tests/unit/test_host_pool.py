"""A node's host pool with its real launcher, forked hosts and the fake engine (no Ray, no
vLLM): ready hosts by demand, hot claims, sleepers LRU, replicas that die, hosts that die."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sllm_ray.engine.build_gate import BuildGate
from sllm_ray.engine.channel import ChannelClient, ChannelError
from sllm_ray.engine.host_pool import MAX_READY, HostPool, Sizing
from sllm_ray.engine.records import EngineSpec, HostLease, HostRecord
from sllm_ray.protocol import Endpoint, ResponseHead
from sllm_ray.testing.fake_engine import FAKE_ENGINE, PRINTING_FAKE_ENGINE


def test_ready_hosts_follow_the_largest_recent_burst_within_the_memory_budget() -> None:
    sizing = Sizing(min_ready=1, memory_bytes=10 * 2**20)
    assert sizing.target(0.0, 2**20) == 1
    for t in range(4):
        sizing.cold_claim(float(t))
    assert sizing.target(4.0, 2**20) == 4
    assert sizing.target(4.0, 4 * 2**20) == 2  # the budget holds two such hosts
    assert sizing.target(100.0, 2**20) == 4  # a quiet minute later: ready for such a burst again
    assert sizing.target(700.0, 2**20) == 1  # the burst is out of memory
    for t in range(40):
        sizing.cold_claim(800.0 + t / 10)
    assert sizing.target(804.0, 1) == MAX_READY
    assert Sizing(min_ready=0, memory_bytes=0).target(0.0, 2**20) == 0


def test_idle_replica_workers_follow_the_largest_recent_burst() -> None:
    sizing = Sizing(min_ready=1, memory_bytes=0)  # no budget for hosts: workers are apart
    assert sizing.workers_target(0.0, min_workers=1) == 1
    for t in range(3):
        sizing.cold_claim(float(t))
    assert sizing.workers_target(3.0, min_workers=1) == 3
    assert sizing.workers_target(100.0, min_workers=5) == 5
    # Cold starts 11 s apart are no burst: each finds the workers replaced.
    for t in range(5):
        sizing.cold_claim(700.0 + 11 * t)
    assert sizing.workers_target(700.0 + 11 * 4, min_workers=1) == 1
    for t in range(40):
        sizing.cold_claim(1200.0 + t / 10)
    assert sizing.workers_target(1204.0, min_workers=0) == MAX_READY


def test_replica_workers_wait_for_a_quiet_node_while_two_are_left_idle() -> None:
    from sllm_ray.engine.replica_workers import BUSY_DEFER_S, ReplicaWorkers

    workers = ReplicaWorkers("node", "app")
    workers.idle = 2
    assert not workers._defer(0.2, 0.0)  # quiet: start now
    assert workers._defer(0.9, 1.0)  # the node serves: later
    assert workers._defer(0.9, BUSY_DEFER_S)
    assert not workers._defer(0.9, 1.0 + BUSY_DEFER_S)  # not for ever
    assert workers._defer(0.9, 2.0 + BUSY_DEFER_S)
    workers.idle = 1  # two cold starts in a row would pay Ray's worker start: now
    assert not workers._defer(0.9, 3.0 + BUSY_DEFER_S)


def test_replica_workers_are_started_one_at_a_time_while_two_are_idle() -> None:
    from sllm_ray.engine.replica_workers import starts_now

    assert starts_now(3, idle=2) == 1
    assert starts_now(3, idle=1) == 3  # the next cold starts would wait for them


def test_an_idle_or_starting_ray_worker_is_told_from_one_that_runs_an_actor() -> None:
    from sllm_ray import ray_compat

    assert ray_compat.is_idle_worker("ray::IDLE", ["ray::IDLE"])
    script = "/venv/lib/python3.11/site-packages/ray/_private/workers/default_worker.py"
    assert ray_compat.is_idle_worker("python", ["/venv/bin/python", script, "--node-ip-address=1"])
    assert not ray_compat.is_idle_worker("ray::ServeRepli", ["ray::ServeReplica:app:model"])


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _asleep(pool: HostPool) -> list[str]:
    return [s["model"] for s in pool.report()["sleeping"]]


def _pids(pool: HostPool) -> list[int]:
    return [h["pid"] for h in pool.report()["hosts"]]


class Replica:
    """A stand-in replica: a real process (its pid is what the pool watches)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(["sleep", "600"])

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


async def _start(lease: HostLease, model: str, **engine: Any) -> ChannelClient:
    client = ChannelClient(lease.address, lease.pid)
    spec = EngineSpec(model, "/models/m", engine, f"fp-{model}")
    if lease.asleep:
        await client.call("wake", keep_asleep=True)
    else:
        await client.call("start", spec=spec.to_json())
    return client


def _run(scenario: Callable[[HostPool], Awaitable[None]], **settings: Any) -> None:
    async def main() -> None:
        options = {
            "min_ready": 1,
            "min_workers": 1,
            "sleep_limit": 2,
            "memory_bytes": 2**30,
            "engine_cls": FAKE_ENGINE,
        } | settings
        pool = HostPool("app", "node", **options)
        try:
            await _until(lambda: pool.report()["free"] >= options["min_ready"])
            await scenario(pool)
        finally:
            await pool.shutdown()

    asyncio.run(main())
    # A scenario's pool leaves cycles (its tasks, the hosts' zmq sockets, the launcher's
    # pipes) whose finalizers run at whichever collection finds them. One inside CPython
    # 3.11.7's AST construction (pytest parsing a module it imports at the end of a run of
    # this file alone) failed the run with "AST constructor recursion depth mismatch":
    # they are collected here, in a run of every test as in one of this file.
    gc.collect()


def test_claimed_hosts_serve_and_are_replaced_at_once() -> None:
    async def scenario(pool: HostPool) -> None:
        replicas = [Replica() for _ in range(3)]
        leases = await asyncio.gather(
            *(pool.claim(f"r{i}", r.process.pid, "fp") for i, r in enumerate(replicas))
        )
        assert len({lease.pid for lease in leases}) == 3 and not any(lease.asleep for lease in leases)
        # The burst raised the pool's target: three ready hosts again, forked in the background.
        await _until(lambda: pool.report()["free"] >= 3)
        client = await _start(leases[0], "m0")
        items = [
            item async for item in client.generate(Endpoint.COMPLETIONS, {"prompt": "hi", "max_tokens": 2})
        ]
        assert isinstance(items[0], ResponseHead) and items[0].body["choices"][0]["text"] == "tok0 tok1"
        client.close()
        for replica in replicas:
            replica.kill()

    _run(scenario)


def test_what_the_launcher_and_its_hosts_print_goes_to_the_log_not_to_the_pool(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """vLLM logs to stdout: a line of it in the launcher's conversation ended the pool's
    reader, and every claim waited for a launcher that was ready long since."""

    async def scenario(pool: HostPool) -> None:
        replica = Replica()
        client = await _start(await pool.claim("r0", replica.process.pid, "fp"), "m0")
        items = [
            item async for item in client.generate(Endpoint.COMPLETIONS, {"prompt": "hi", "max_tokens": 1})
        ]
        assert isinstance(items[0], ResponseHead) and items[0].body["choices"][0]["text"] == "tok0"
        client.close()
        replica.kill()

    _run(scenario, engine_cls=PRINTING_FAKE_ENGINE)
    log = capfd.readouterr().err
    assert "a plugin's banner" in log and "building m0" in log


def test_a_gone_replica_puts_its_engine_to_sleep_and_the_next_one_wakes_it() -> None:
    async def scenario(pool: HostPool) -> None:
        first = Replica()
        lease = await pool.claim("r1", first.process.pid, "fp-a")
        (await _start(lease, "a")).close()
        first.kill()  # the pool notices through the pid and parks the engine
        await _until(lambda: _asleep(pool) == ["a"])
        second = Replica()
        hot = await pool.claim("r2", second.process.pid, "fp-a")
        assert hot.asleep and hot.pid == lease.pid and pool.report()["hot_claims"] == 1
        client = await _start(hot, "a")
        record = await client.call("record")
        assert record["wakes"] == 1
        client.close()
        second.kill()

    _run(scenario)


def test_sleepers_over_the_limit_exit_least_recently_used_first() -> None:
    async def scenario(pool: HostPool) -> None:
        pids = {}
        for model in ("a", "b", "c"):
            replica = Replica()
            lease = await pool.claim(f"r-{model}", replica.process.pid, f"fp-{model}")
            (await _start(lease, model)).close()
            pids[model] = lease.pid
            replica.kill()
            await _until(lambda m=model: m in _asleep(pool))
        assert _asleep(pool) == ["b", "c"]
        await _until(lambda: pids["a"] not in _pids(pool))
        assert pool.report()["evictions"] == 1
        pool.forget("b")  # deleted: its sleeper exits, and a late retiree is turned away
        await _until(lambda: _asleep(pool) == ["c"])
        late = Replica()
        lease = await pool.claim("r-late", late.process.pid, "fp-b")
        assert not lease.asleep
        (await _start(lease, "b")).close()
        await pool.retire(lease.host_id)
        await _until(lambda: lease.pid not in _pids(pool))
        late.kill()

    _run(scenario)


def test_a_failed_build_names_the_cause_and_a_dead_host_leaves_the_pool() -> None:
    async def scenario(pool: HostPool) -> None:
        replica = Replica()
        lease = await pool.claim("r", replica.process.pid, "fp")
        client = ChannelClient(lease.address, lease.pid)
        spec = EngineSpec("m", "/models/m", {"fake_fail": "no memory for the KV cache"}, "fp")
        with pytest.raises(ChannelError, match="RuntimeError: no memory for the KV cache"):
            await client.call("start", spec=spec.to_json())
        client.close()
        pool.discard(lease.host_id)
        await _until(lambda: lease.pid not in _pids(pool))
        ready = next(h for h in pool.report()["hosts"] if h["state"] == "ready")
        os.kill(ready["pid"], signal.SIGKILL)  # an idle host dies: replaced, never handed out
        await _until(lambda: ready["pid"] not in _pids(pool))
        await _until(lambda: pool.report()["free"] == 1)
        replica.kill()

    _run(scenario, sleep_limit=0)


def test_a_host_builds_one_engine_and_reports_its_memory_while_serving() -> None:
    async def scenario(pool: HostPool) -> None:
        replica = Replica()
        lease = await pool.claim("r", replica.process.pid, "fp", model="m")
        client = ChannelClient(lease.address, lease.pid)
        spec = EngineSpec("m", "/models/m", {"fake_build_s": 0.3}, "fp")
        first = asyncio.ensure_future(client.call("start", spec=spec.to_json()))
        await asyncio.sleep(0.05)  # building
        with pytest.raises(ChannelError, match="already built m"):
            await client.call("start", spec=spec.to_json())
        record = HostRecord.from_json(await first)
        assert record.engine_started_at is not None and record.engine_ready_at is not None
        (host,) = [h for h in (await pool.status())["hosts"] if h["pid"] == lease.pid]
        assert (host["state"], host["model"]) == ("serving", "m") and host["uss_bytes"] > 0
        with pytest.raises(ChannelError, match="already built m"):  # and after it
            await client.call("start", spec=spec.to_json())
        client.close()
        replica.kill()

    _run(scenario)


def test_builds_beyond_the_nodes_slots_wait_for_one() -> None:
    async def scenario(pool: HostPool) -> None:
        replicas = [Replica() for _ in range(3)]
        leases = [await pool.claim(f"r{i}", r.process.pid, f"fp{i}") for i, r in enumerate(replicas)]
        clients = [ChannelClient(lease.address, lease.pid) for lease in leases]
        specs = [EngineSpec(f"m{i}", "/models/m", {"fake_build_s": 0.3}, f"fp{i}") for i in range(3)]
        starts = (c.call("start", spec=s.to_json()) for c, s in zip(clients, specs, strict=True))
        records = [HostRecord.from_json(r) for r in await asyncio.gather(*starts)]
        records.sort(key=lambda r: r.engine_started_at or 0)
        spans = [(r.engine_started_at or 0, r.engine_ready_at or 0) for r in records]
        # Two slots: two builds at once, the third after one of them ended, having waited.
        assert spans[1][0] < spans[0][1]
        assert spans[2][0] >= min(spans[0][1], spans[1][1]) - 0.02
        assert records[2].phases["build_slot_wait_s"] > 0.05
        assert pool.report()["build_slots"] == 2
        for client in clients:
            client.close()
        for replica in replicas:
            replica.kill()

    _run(scenario, min_ready=3, build_slots=2)


def test_a_build_slot_held_by_a_killed_process_is_free_again(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)",
            str(tmp_path / "build-0.lock"),
        ],
        stdout=subprocess.PIPE,
    )

    async def main() -> float:
        gate = BuildGate(str(tmp_path), 1)
        asyncio.get_running_loop().call_later(0.3, holder.kill)
        async with gate.slot() as waited:
            return waited

    with holder:  # its pipe closed and the process waited for, however the test ends
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert asyncio.run(main()) >= 0.25


def test_a_worker_taken_before_its_claim_is_not_replaced_beside_that_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count sees a worker gone (an actor being placed) before the replica claims a
    host: the replacement waits ``CLAIM_QUIET_S`` from then, not only from the claim."""
    from sllm_ray.engine import replica_workers
    from sllm_ray.engine.replica_workers import CLAIM_QUIET_S, ReplicaWorkers

    started: list[int] = []
    idle = [4]

    async def prestart(node_id: str, job_id: str, env: str, count: int, keep_alive_s: int) -> None:
        started.append(count)

    monkeypatch.setattr(replica_workers, "count_idle", lambda seen: (idle[0], 0))
    monkeypatch.setattr(replica_workers.ray_compat, "prestart_workers", prestart)
    monkeypatch.setattr(replica_workers.psutil, "cpu_percent", lambda interval: 10.0)
    workers = ReplicaWorkers("node", "app")
    workers.claimed("01000000", "{}", now=0.0)  # long ago

    asyncio.run(workers.keep(4, 100.0))
    idle[0] = 3  # taken by a replica's actor, which has not claimed a host yet
    asyncio.run(workers.keep(4, 101.0))
    asyncio.run(workers.keep(4, 101.0 + CLAIM_QUIET_S - 0.1))
    assert started == []
    asyncio.run(workers.keep(4, 101.0 + CLAIM_QUIET_S))
    assert started == [1]


def test_replica_workers_start_once_the_last_claims_start_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker taken by a start is replaced ``CLAIM_QUIET_S`` after its claim (not beside
    the next start), one at a time while two are idle, ``SETTLE_S`` apart."""
    from sllm_ray.engine import replica_workers
    from sllm_ray.engine.replica_workers import CLAIM_QUIET_S, SETTLE_S, ReplicaWorkers

    started: list[int] = []

    async def prestart(node_id: str, job_id: str, env: str, count: int, keep_alive_s: int) -> None:
        started.append(count)

    monkeypatch.setattr(replica_workers, "count_idle", lambda seen: (2, 0))
    monkeypatch.setattr(replica_workers.ray_compat, "prestart_workers", prestart)
    monkeypatch.setattr(replica_workers.psutil, "cpu_percent", lambda interval: 10.0)
    workers = ReplicaWorkers("node", "app")
    workers.claimed("01000000", "{}", now=100.0)

    async def keep_at(now: float) -> None:
        await workers.keep(4, now)

    asyncio.run(keep_at(100.0 + CLAIM_QUIET_S - 0.1))
    assert started == []  # the start is still under way
    asyncio.run(keep_at(100.0 + CLAIM_QUIET_S))
    assert started == [1]
    asyncio.run(keep_at(100.0 + CLAIM_QUIET_S + SETTLE_S - 0.1))
    assert started == [1]  # the raylet may not show the last one yet
    asyncio.run(keep_at(100.0 + CLAIM_QUIET_S + SETTLE_S))
    assert started == [1, 1]
