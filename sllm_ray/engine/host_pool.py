"""Per-node pools of engine hosts: forked ahead of demand, and the sleeping engines.

One ``HostPool`` actor per node (started by the model manager, named after the app and
the node) starts the node's launcher (``launcher.py``) and keeps hosts forked from it
ready: at least ``min_ready``, and as many as the largest burst of cold starts (those
within one ``BURST_S``) of the last ``BURST_MEMORY_S``, within ``memory_bytes`` of the idle
hosts' unique memory.
``claim`` hands one out at once and forks its replacement at once (a fork takes
milliseconds: nothing competes with the cold path for the CPU); with none ready it forks
one on the spot, which is as fast once the launcher is prepared.

When a replica goes away (its process exits, watched through a pidfd, or it retires its
host), the host's engine goes to sleep here (llm-d's fast model actuation): up to
``sleep_limit`` sleeping engines per node, the least recently used one exiting beyond
it. A replica of the same engine claiming a host on this node gets the sleeping one,
which wakes instead of building (a hot start).

The pool also keeps the node's idle Ray workers for the next model replicas
(``replica_workers.py``), as many as that largest burst too, at least ``min_workers``,
and passes the node's engine starts on to the model manager (``start_feed.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import psutil

from sllm_ray.engine.build_gate import BuildGate
from sllm_ray.engine.channel import ChannelClient, ChannelError
from sllm_ray.engine.launcher import Launcher, LauncherError
from sllm_ray.engine.process_exit import wait_exit
from sllm_ray.engine.records import EngineStarted, EngineStarts, HostLease, HostRecord, host_address
from sllm_ray.engine.replica_workers import ReplicaWorkers
from sllm_ray.engine.sleepers import Sleepers
from sllm_ray.engine.start_feed import StartFeed
from sllm_ray.log_setup import configure_logging

logger = logging.getLogger(__name__)

# After a model is deleted, its replicas' engines may still be on their way to sleep here:
# they are turned away for this long.
FORGET_S = 60.0
# Cold starts within this window are one burst; a node keeps hosts and replica workers
# for the largest burst of the longer one. Ten seconds, not a minute: cold starts spread
# over a minute find the hosts and workers replaced in between, and counting them as one
# burst had a node start 14 replica workers (2 CPU-seconds each) after a replayed trace.
# Ten minutes, not one: a burst after a quiet minute that found one ready host forked the
# others on the spot, each claim then waiting 1 to 1.5 s for its host on 2 cores
# (benchmarks/burst.py, N = 4).
BURST_S = 10.0
BURST_MEMORY_S = 600.0
# At most this many ready hosts per node, whatever the rate and the budget.
MAX_READY = 16
# A forked, idle host's unique memory until one has been measured.
HOST_USS_GUESS = 64 * 1024**2
# How often the pool counts its node's idle replica workers.
WORKERS_CHECK_S = 1.0
# How long a host may take to answer a control call from the pool.
CALL_TIMEOUT_S = 30.0
# Environment of the launcher and so of every host: the CPU build keeps its model worker
# in-process only when vLLM's multiprocessing is off (it affects nothing else in AsyncLLM).
HOST_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
# Defaults the node's own environment overrides. OpenMP's threads spin between parallel
# regions by default: an engine building (or idle between steps) then burns the cores
# that the other engines, Serve's controller and the replicas need. Sleeping at once
# took a lone cold start from 1.5-2.1 s to 1.1-1.2 s and a burst of four from up to
# 9.2 s to at most 3.7 s on 2 cores (benchmarks/burst.py).
HOST_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def host_env() -> dict[str, str]:
    """The environment the launcher adds to the node's."""
    return {**{k: os.environ.get(k, v) for k, v in HOST_ENV_DEFAULTS.items()}, **HOST_ENV}


def node_build_slots(configured: int | None) -> int:
    """Engine builds a node runs at once: as configured, else one per CPU this process
    may run on."""
    return configured if configured is not None else len(os.sched_getaffinity(0))


READY, SERVING, ASLEEP, EXITING = "ready", "serving", "asleep", "exiting"


@dataclass
class _Host:
    host_id: str
    pid: int
    address: str
    client: ChannelClient
    state: str = READY
    model: str | None = None
    fingerprint: str | None = None
    since: float = field(default_factory=time.time)
    uss: int | None = None
    watches: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class Sizing:
    """How many ready hosts a node keeps (pure logic)."""

    min_ready: int
    memory_bytes: int
    claims: deque[float] = field(default_factory=deque)  # monotonic times of cold claims

    def cold_claim(self, now: float) -> None:
        self.claims.append(now)

    def largest_burst(self, now: float) -> int:
        """The most cold claims within one ``BURST_S`` over the last ``BURST_MEMORY_S``."""
        while self.claims and now - self.claims[0] > BURST_MEMORY_S:
            self.claims.popleft()
        largest, first = 0, 0
        for last, at in enumerate(self.claims):  # in time order: a sliding window
            while at - self.claims[first] > BURST_S:
                first += 1
            largest = max(largest, last - first + 1)
        return largest

    def target(self, now: float, host_uss: int) -> int:
        """Ready hosts to keep, within the memory budget."""
        wanted = max(self.min_ready, self.largest_burst(now))
        affordable = self.memory_bytes // max(host_uss, 1)
        return max(0, min(wanted, affordable, MAX_READY))

    def workers_target(self, now: float, min_workers: int) -> int:
        """Idle replica workers to keep (no memory budget: ``min_workers`` bounds them
        from below, ``MAX_READY`` from above)."""
        return min(max(min_workers, self.largest_burst(now)), MAX_READY)


def _unique_memory(pids: list[int]) -> dict[int, int]:
    """USS by pid, of the processes still there."""
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out[pid] = psutil.Process(pid).memory_full_info().uss
    return out


class HostPool:
    def __init__(
        self,
        app: str,
        node_id: str,
        min_ready: int,
        min_workers: int,
        sleep_limit: int,
        memory_bytes: int,
        engine_cls: str,
        build_slots: int | None = None,
    ) -> None:
        configure_logging()
        self._app = app
        self._node_id = node_id
        self._sleep_limit = sleep_limit
        self._sizing = Sizing(min_ready, memory_bytes)
        # Socket paths have at most 107 bytes: a short folder of this pool's own.
        self._run_dir = tempfile.mkdtemp(prefix="sllm-")
        self._hosts: dict[str, _Host] = {}
        self._ready: list[_Host] = []
        self._forking = 0
        # Host id -> sleeping host, least recently used first.
        self._sleeping: Sleepers[str, _Host] = Sleepers(sleep_limit)
        self._forgotten: dict[str, float] = {}  # deleted model -> when
        self._exits: dict[int, int] = {}  # pid -> exit code, from the launcher
        self.claims = 0
        self.slow_claims = 0
        self.hot_claims = 0
        self.evictions = 0
        self._gate = BuildGate(self._run_dir, node_build_slots(build_slots))
        self._launcher = Launcher(engine_cls, self._gate, host_env(), self._host_exited)
        self._tasks: set[asyncio.Task[None]] = set()
        self._spawn(self._start_launcher())
        self._min_workers = min_workers
        self._workers = ReplicaWorkers(node_id, app)
        self._spawn(self._keep_workers())
        self._starts = StartFeed()

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start_launcher(self) -> None:
        await self._launcher.start()
        await self._launcher.prepared.wait()
        if self._launcher.failure is not None:
            logger.error("engine launcher on node %s failed: %s", self._node_id, self._launcher.failure)
            return
        logger.info("engine launcher on node %s prepared in %.2f s", self._node_id, self._launcher.prepare_s)
        self._refill()

    def _host_exited(self, pid: int, code: int) -> None:
        self._exits[pid] = code
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            logger.warning("engine host process %d on node %s ended: %s", pid, self._node_id, how)

    # Forking and sizing.

    def _host_uss(self) -> int:
        measured = [h.uss for h in self._ready if h.uss]
        return max(measured) if measured else HOST_USS_GUESS

    def _refill(self) -> None:
        if not self._launcher.alive:
            return
        missing = self._sizing.target(time.monotonic(), self._host_uss()) - len(self._ready) - self._forking
        for _ in range(max(missing, 0)):
            self._spawn(self._fork_ready())

    async def _fork_ready(self) -> None:
        try:
            host = await self._fork()
        except LauncherError as exc:
            logger.error("could not fork an engine host on node %s: %s", self._node_id, exc)
            return
        self._ready.append(host)

    async def _fork(self) -> _Host:
        self._forking += 1
        try:
            host_id = uuid.uuid4().hex
            address = host_address(self._run_dir, host_id)
            pid = await self._launcher.fork(host_id, address)
        finally:
            self._forking -= 1
        host = _Host(host_id, pid, address, ChannelClient(address, pid))
        self._hosts[host_id] = host
        host.watches.append(self._spawn(self._watch_host(host)))
        return host

    async def _watch_host(self, host: _Host) -> None:
        await wait_exit(host.pid)
        self._drop(host)

    def _drop(self, host: _Host) -> None:
        self._hosts.pop(host.host_id, None)
        self._sleeping.pop(host.host_id)
        if host in self._ready:
            self._ready.remove(host)
        host.client.close()
        for task in host.watches:
            if task is not asyncio.current_task():
                task.cancel()
        self._refill()

    async def _keep_workers(self) -> None:
        while True:
            now = time.monotonic()
            try:
                await self._workers.keep(self._sizing.workers_target(now, self._min_workers), now)
            except Exception:
                logger.exception("could not keep replica workers on node %s", self._node_id)
            await asyncio.sleep(WORKERS_CHECK_S)

    # Claims.

    async def claim(
        self,
        replica: str,
        replica_pid: int,
        fingerprint: str | None = None,
        worker_env: tuple[str, str] | None = None,
        model: str | None = None,
    ) -> HostLease:
        """A host for ``replica`` (its process ``replica_pid``, watched so the host retires
        with it): the one whose engine with ``fingerprint`` sleeps here, else a ready one.
        ``worker_env``: the replica's job id and runtime environment, for the workers
        started for the next replicas (``replica_workers``); ``model``: its name, for
        ``status`` (what each host's memory is held for)."""
        self.claims += 1
        if worker_env is not None:
            self._workers.claimed(*worker_env, time.monotonic())
        host = self._sleeper(fingerprint)
        hot = host is not None
        if hot:
            self.hot_claims += 1
        else:
            self._sizing.cold_claim(time.monotonic())
            if not self._launcher.prepared.is_set():
                self.slow_claims += 1
                logger.warning("engine launcher on node %s still preparing: %s waits", self._node_id, replica)
            host = self._ready.pop(0) if self._ready else await self._fork()
        host.state, host.since = SERVING, time.time()
        host.model = host.model or model
        host.watches.append(self._spawn(self._watch_replica(host, replica_pid)))
        self._refill()
        return HostLease(host.host_id, host.pid, host.address, asleep=hot)

    def _sleeper(self, fingerprint: str | None) -> _Host | None:
        return self._sleeping.take(fingerprint)

    async def _watch_replica(self, host: _Host, replica_pid: int) -> None:
        await wait_exit(replica_pid)
        if self._hosts.get(host.host_id) is host and host.state == SERVING:
            logger.info("replica (process %d) of host %s is gone", replica_pid, host.host_id[:8])
            await self.retire(host.host_id)

    async def retire(self, host_id: str) -> None:
        """The replica is done with this host: its engine sleeps here (up to the limit,
        least recently used out), or the host exits."""
        host = self._hosts.get(host_id)
        if host is None or host.state != SERVING:
            return
        for task in host.watches[1:]:  # the replica's watch
            if task is not asyncio.current_task():
                task.cancel()
        del host.watches[1:]
        try:
            record = HostRecord.from_json(await self._call(host, "record"))
        except ChannelError:
            self._exit(host)
            return
        if not self._may_sleep(record):
            self._exit(host)
            return
        try:
            await self._call(host, "sleep")
        except ChannelError as exc:
            logger.warning("cannot put the engine of %s to sleep (%s): exiting", record.model, exc)
            self._exit(host)
            return
        host.state, host.since = ASLEEP, time.time()
        host.model, host.fingerprint = record.model, record.fingerprint
        for evicted in self._sleeping.add(host_id, host.fingerprint, host):
            self.evictions += 1
            logger.info("sleeping engine of %s exits: more than %d asleep", evicted.model, self._sleep_limit)
            self._exit(evicted)
        logger.info(
            "engine of %s asleep on node %s (%d sleeping)", host.model, self._node_id, len(self._sleeping)
        )

    def _may_sleep(self, record: HostRecord) -> bool:
        if record.engine_ready_at is None or not record.keep_asleep or self._sleep_limit <= 0:
            return False
        deleted = self._forgotten.get(record.model or "", -FORGET_S)
        return time.monotonic() - deleted >= FORGET_S

    def discard(self, host_id: str) -> None:
        """The replica could not use this host (its engine failed to build): it exits."""
        host = self._hosts.get(host_id)
        if host is not None:
            self._exit(host)

    def forget(self, model: str) -> None:
        """The model was deleted: its sleeping engines exit, and those still retiring too."""
        self._forgotten[model] = time.monotonic()
        for host in [h for h in self._sleeping if h.model == model]:
            self._exit(host)

    async def _call(self, host: _Host, name: str) -> object:
        try:
            return await asyncio.wait_for(host.client.call(name), CALL_TIMEOUT_S)
        except TimeoutError:
            raise ChannelError(f"engine host {host.host_id} did not answer {name!r}") from None

    def _exit(self, host: _Host) -> None:
        """Ask the host to exit; kill it when it does not within the call timeout."""
        self._sleeping.pop(host.host_id)
        host.state = EXITING

        async def stop() -> None:
            try:
                await self._call(host, "exit")
                await asyncio.wait_for(wait_exit(host.pid), CALL_TIMEOUT_S)
            except (ChannelError, TimeoutError):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(host.pid, signal.SIGKILL)

        self._spawn(stop())

    # Engine starts, for the model manager.

    def engine_started(self, started: EngineStarted) -> None:
        """A replica on this node has its first engine (``ModelServer``)."""
        self._starts.add(started)

    async def engines_started(self, instance: str, seq: int, wait_s: float) -> EngineStarts:
        """What the manager follows (``NodeServices``): ``StartFeed.since``."""
        return await self._starts.since(instance, seq, wait_s)

    # Reports.

    async def status(self) -> dict[str, object]:
        """The report, with every host's unique memory read now: a ready one's sizes the
        pool, a serving or sleeping one's is what its model holds (``sllm-ray replay``'s
        memory-seconds, read through ``/status`` every second). The reading is off the event
        loop: about 10 ms of kernel time per host, which claims would otherwise wait for."""
        hosts = list(self._hosts.values())
        measured = await asyncio.to_thread(_unique_memory, [h.pid for h in hosts])
        for host in hosts:
            host.uss = measured.get(host.pid, host.uss)
        return self.report()

    def report(self) -> dict[str, object]:
        """The pool as it stands, each host's memory as last read (``status``)."""
        return {
            "node_id": self._node_id,
            # Whether a cold start here pays no vLLM import: the launcher is prepared.
            "ready": self._launcher.prepared.is_set() and self._launcher.alive,
            "launcher": {
                "pid": self._launcher.pid,
                "prepare_s": self._launcher.prepare_s,
                "failure": self._launcher.failure,
            },
            "min_ready": self._sizing.min_ready,
            "build_slots": self._gate.slots,
            "target_ready": self._sizing.target(time.monotonic(), self._host_uss()),
            "free": len(self._ready),
            "serving": sum(h.state == SERVING for h in self._hosts.values()),
            "forking": self._forking,
            "hosts": [
                {"pid": h.pid, "state": h.state, "model": h.model, "uss_bytes": h.uss}
                for h in self._hosts.values()
            ],
            "claims": self.claims,
            "slow_claims": self.slow_claims,
            "hot_claims": self.hot_claims,
            "sleep_limit": self._sleep_limit,
            "sleeping": [
                {"model": h.model, "fingerprint": h.fingerprint, "since": h.since} for h in self._sleeping
            ],
            "evictions": self.evictions,
            "memory_bytes": self._sizing.memory_bytes,
            "replica_workers": {
                "idle": self._workers.idle,
                "starting": self._workers.starting,
                "target": self._sizing.workers_target(time.monotonic(), self._min_workers),
                "started": self._workers.started,
            },
        }

    async def shutdown(self) -> None:
        """End every host and the launcher (the node's pool is going away)."""
        self._launcher.stop()
        await self._launcher.wait()
        for host in list(self._hosts.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.pid, signal.SIGKILL)
            self._drop(host)

    def __del__(self) -> None:
        launcher = getattr(self, "_launcher", None)
        if launcher is not None:
            launcher.stop()
