"""The replica-to-host channel: streaming, calls, errors, aborts and a host process that dies
(no Ray, no vLLM)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sllm_ray.engine.channel import ChannelClient, ChannelError, ChannelServer
from sllm_ray.protocol import Endpoint, ResponseHead


class Engine:
    """Stands in for vLLM's serving layer: the channel's logic is all that is tested here."""

    def __init__(self) -> None:
        self.aborted = asyncio.Event()

    async def generate(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[ResponseHead | str]:
        if body.get("fail"):
            raise ValueError("engine broke")
        yield ResponseHead(
            200 if body.get("stream") else 201, None if body.get("stream") else {"ok": endpoint}
        )
        try:
            for i in range(body.get("n", 0)):
                await asyncio.sleep(body.get("delay", 0))
                yield f"data: {i}\n\n"
        except (GeneratorExit, asyncio.CancelledError):  # how vLLM's generate sees an abort
            self.aborted.set()
            raise


async def _control(name: str, args: dict[str, Any]) -> Any:
    if name == "echo":
        return args
    raise ValueError(f"no call {name}")


def _address() -> str:
    return f"ipc://{tempfile.mkdtemp(prefix='sllm-t-')}/h.sock"


def _server(engine: Engine) -> ChannelServer:
    server = ChannelServer(_address(), _control)
    server.serve(engine.generate)
    return server


async def _collect(stream: AsyncIterator[ResponseHead | str]) -> list[ResponseHead | str]:
    return [item async for item in stream]


def test_replies_stream_in_order_and_requests_interleave() -> None:
    async def scenario() -> None:
        engine = Engine()
        server = _server(engine)
        client = ChannelClient(server.address)
        whole, stream = await asyncio.gather(
            _collect(client.generate(Endpoint.CHAT, {"n": 0})),
            _collect(client.generate(Endpoint.COMPLETIONS, {"stream": True, "n": 3, "delay": 0.01})),
        )
        assert whole == [ResponseHead(201, {"ok": "chat"})]
        assert stream == [ResponseHead(200, None), "data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]
        with pytest.raises(ChannelError, match="ValueError: engine broke"):
            await _collect(client.generate(Endpoint.CHAT, {"fail": True}))
        assert await client.call("echo", a=1) == {"a": 1}
        with pytest.raises(ChannelError, match="ValueError: no call nope"):
            await client.call("nope")
        client.close()
        server.close()

    asyncio.run(scenario())


def test_a_caller_that_goes_away_aborts_the_request_in_the_engine() -> None:
    async def scenario() -> None:
        engine = Engine()
        server = _server(engine)
        client = ChannelClient(server.address)
        stream = client.generate(Endpoint.COMPLETIONS, {"stream": True, "n": 1000, "delay": 0.01})
        assert await anext(stream) == ResponseHead(200, None)
        await anext(stream)
        await stream.aclose()
        await asyncio.wait_for(engine.aborted.wait(), 5)
        assert server.stats == {"requests": 1, "aborted": 1}
        # The connection still serves others.
        assert len(await _collect(client.generate(Endpoint.CHAT, {"stream": True, "n": 2}))) == 3
        client.close()
        server.close()

    asyncio.run(scenario())


HOST = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from test_channel import Engine, _control
from sllm_ray.engine.channel import ChannelServer

async def main():
    server = ChannelServer({address!r}, _control)
    server.serve(Engine().generate)
    print("up", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_host_process_that_dies_fails_waiting_and_new_requests() -> None:
    """The host is a real process killed with SIGKILL: the client notices through its pid."""

    async def scenario() -> None:
        address = _address()
        code = HOST.format(tests=str(Path(__file__).parent), address=address)
        host = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert host.stdout is not None and host.stdout.readline() == b"up\n"
        client = ChannelClient(address, host.pid)
        stream = client.generate(Endpoint.COMPLETIONS, {"stream": True, "n": 1000, "delay": 0.05})
        await anext(stream)
        os.kill(host.pid, signal.SIGKILL)
        with pytest.raises(ChannelError, match=f"process {host.pid}\\) exited"):
            await asyncio.wait_for(_collect(stream), 5)
        host.wait()
        with pytest.raises(ChannelError, match="exited"):
            await _collect(client.generate(Endpoint.CHAT, {}))
        with pytest.raises(ChannelError, match="exited"):
            await client.call("echo")
        client.close()

    asyncio.run(scenario())
