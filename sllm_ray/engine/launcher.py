"""The launcher: one prepared parent process per node that forks engine hosts on demand.

Importing vLLM and torch costs about 8 s of CPU per process on a 2-core machine; a
burst of cold starts that each paid it would take half a minute. So each node's pool
starts one launcher, which imports the engine class and runs its ``prepare_process``
once (vLLM, torch, the model runner and common model code, kernel overrides), freezes
its heap out of the collector's sight, and then forks a host whenever the pool asks:
a fork takes milliseconds, and the child shares the prepared memory copy-on-write
(llm-d's launcher and fork-based serverless systems do the same).

Forking is safe only while the parent runs no other thread and has not initialized
CUDA: the launcher checks the first after preparing (a warning names the threads) and
nothing in preparing touches the second. Each child takes its devices when it is given
its engine (``host.use_devices``), before anything initializes CUDA.

The pool talks to its launcher over the launcher's stdin and stdout, one JSON object
per line (no sockets, no threads in the launcher; whatever else the launcher or a host
prints goes to stderr, the pool's log):

- launcher → pool: ``{"ready": true, "prepare_s": s}`` once prepared (or
  ``{"failed": message}``), ``{"forked": host_id, "pid": n}`` per fork, ``{"exited":
  pid, "status": code}`` when a host ends (a negative code: killed by that signal);
- pool → launcher: ``{"fork": host_id, "address": "ipc://..."}``.

The launcher exits when its pool's process does (``PR_SET_PDEATHSIG``, or its stdin
closing), and its hosts exit with it: nothing outlives the pool that owns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sllm_ray.engine.build_gate import BuildGate
from sllm_ray.engine.interface import engine_class
from sllm_ray.log_setup import configure_logging

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
# The file descriptor of the conversation with the pool: the stdout the pool started this
# process with, until ``main`` moves it aside.
_conversation = 1


class LauncherError(RuntimeError):
    """The launcher could not prepare, or is gone."""


def _die_with_parent() -> None:
    """Have the kernel kill this process when the one that forked it exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _send(message: dict[str, Any]) -> None:
    # One write per line: under PIPE_BUF bytes it is atomic, even from the SIGCHLD handler.
    os.write(_conversation, (json.dumps(message) + "\n").encode())


def _reap(_signum: int, _frame: object) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send({"exited": pid, "status": os.waitstatus_to_exitcode(status)})


def _child(host_id: str, address: str, cls: Any, gate: BuildGate, launcher_pid: int) -> None:
    """The forked host: detach from the launcher's pipes and serve until told to exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    if os.getppid() != launcher_pid:  # the launcher died before the line above
        os._exit(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.close(_conversation)  # the launcher's alone: a host's end is told by the launcher
    from sllm_ray.engine.host import serve_host

    code = 0
    try:
        asyncio.run(serve_host(host_id, address, cls, gate))
    except BaseException:
        logger.exception("engine host %s failed", host_id)
        code = 1
    finally:
        os._exit(code)


def main(engine_cls: str, gate: BuildGate) -> None:
    """The launcher process: prepare, then fork a host per request until stdin closes;
    the hosts share ``gate``."""
    global _conversation
    _die_with_parent()
    # Whatever else is written to stdout, here or in a host, goes to the pool's log: vLLM
    # logs to stdout, and a line in the conversation that is no message would end it.
    _conversation = os.dup(1)
    os.dup2(2, 1)
    configure_logging()
    started = time.perf_counter()
    try:
        cls = engine_class(engine_cls)
        cls.prepare_process()
    except Exception as exc:
        logger.exception("the engine launcher could not prepare %s", engine_cls)
        _send({"failed": f"{type(exc).__name__}: {exc}"})
        return
    gc.collect()
    # vLLM calls gc.collect() several times while building an engine; with everything
    # imported so far out of the collector's sight each call stays cheap, and the
    # collector never writes to (and so never copies) the pages the hosts share.
    gc.freeze()
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        logger.warning("threads running in the launcher make forking unsafe: %s", others)
    signal.signal(signal.SIGCHLD, _reap)
    _send({"ready": True, "prepare_s": time.perf_counter() - started, "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request["fork"], request["address"], cls, gate, os.getppid())
        _send({"forked": request["fork"], "pid": pid})


class Launcher:
    """The pool's end: starts the launcher process and asks it for hosts."""

    def __init__(
        self, engine_cls: str, gate: BuildGate, env: dict[str, str], on_exit: Callable[[int, int], None]
    ) -> None:
        self._engine_cls = engine_cls
        self._gate = gate
        self._env = env
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._forks: dict[str, asyncio.Future[int]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.prepared = asyncio.Event()
        self.prepare_s: float | None = None
        self.failure: str | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        self.prepared.clear()
        self.failure = None
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sllm_ray.engine.launcher",
            self._engine_cls,
            self._gate.directory,
            str(self._gate.slots),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **self._env},
        )
        self._reader = asyncio.get_running_loop().create_task(self._read(self._process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            message = json.loads(line)
            if "forked" in message:
                future = self._forks.pop(message["forked"], None)
                if future is not None and not future.done():
                    future.set_result(int(message["pid"]))
            elif "exited" in message:
                self._on_exit(int(message["exited"]), int(message["status"]))
            elif "ready" in message:
                self.prepare_s = float(message["prepare_s"])
                self.prepared.set()
            elif "failed" in message:
                self.failure = str(message["failed"])
        code = await process.wait()
        self.failure = self.failure or f"the engine launcher exited with status {code}"
        self.prepared.clear()
        for future in self._forks.values():
            if not future.done():
                future.set_exception(LauncherError(self.failure))
        self._forks.clear()
        self.prepared.set()  # wake waiters: they see the failure

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None and self.failure is None

    async def fork(self, host_id: str, address: str) -> int:
        """A new host's pid; waits for the launcher to be prepared."""
        await self.prepared.wait()
        if not self.alive or self._process is None or self._process.stdin is None:
            raise LauncherError(self.failure or "the engine launcher is not running")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._forks[host_id] = future
        self._process.stdin.write((json.dumps({"fork": host_id, "address": address}) + "\n").encode())
        await self._process.stdin.drain()
        return await future

    def stop(self) -> None:
        """Kill the launcher (its hosts die with it)."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    async def wait(self) -> None:
        if self._reader is not None:
            await self._reader


if __name__ == "__main__":
    main(sys.argv[1], BuildGate(sys.argv[2], int(sys.argv[3])))
