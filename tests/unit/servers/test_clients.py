"""The clients: LocalClient and LocalStream, the in-process stand-in for a streaming
DeploymentHandle (fused model), and StreamClient over a handle."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from llmserve.servers.clients import LocalClient, StreamClient
from llmserve.servers.protocol import NO_META, Endpoint, RequestMeta

pytestmark = pytest.mark.unit


class Counter:
    """A StreamingServer: ``serve`` streams ``body["n"]`` events from ``body["start"]``,
    or fails after its first item (``body["fail"]``); records how each stream ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.meta: list[RequestMeta] = []

    def respond(self, endpoint: Endpoint, body: dict, meta: RequestMeta):
        self.meta.append(meta)
        if body.get("fail"):
            return self.fail(body)
        return self.count(body["n"], body.get("start", 0))

    async def count(self, n: int, start: int = 0):
        try:
            for i in range(start, start + n):
                await asyncio.sleep(0)
                yield f"data: {i}\n\n"
        except GeneratorExit:
            self.ended.append("closed")
            raise
        else:
            self.ended.append("exhausted")
        finally:
            self.ended.append("finally")

    async def fail(self, body):
        yield body
        raise ValueError("bad request")


async def _collect(stream) -> list:
    return [item async for item in stream]


def _stream(target, body: dict, meta: RequestMeta = NO_META):
    return LocalClient(target).stream(Endpoint.CHAT, body, meta)


def test_a_stream_yields_every_item_in_order() -> None:
    target = Counter()
    stream = _stream(target, {"n": 3, "start": 5})
    assert asyncio.run(_collect(stream)) == ["data: 5\n\n", "data: 6\n\n", "data: 7\n\n"]
    assert target.ended == ["exhausted", "finally"]


def test_the_request_meta_reaches_the_server() -> None:
    target = Counter()
    meta = RequestMeta.from_headers({"x-request-id": "abc", "authorization": "Bearer k"})
    asyncio.run(_collect(_stream(target, {"n": 1}, meta)))
    assert target.meta == [RequestMeta({"x-request-id": "abc"})]  # never the key


def test_an_exception_in_the_target_reaches_the_consumer() -> None:
    stream = _stream(Counter(), {"fail": True, "a": 1})

    async def run() -> None:
        assert await stream.__anext__() == {"fail": True, "a": 1}
        with pytest.raises(ValueError, match="bad request"):
            await stream.__anext__()

    asyncio.run(run())


class _Handle:
    """What StreamClient needs of a Serve handle: its name and streaming ``serve``."""

    deployment_name = "llm-m"

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.stream_option: bool | None = None

    def options(self, stream: bool = False) -> _Handle:
        self.stream_option = stream
        return self

    @property
    def respond(self) -> _Handle:
        return self

    def remote(self, *args):
        self.calls.append(args)
        return "a response generator"


def test_a_stream_client_calls_serve_on_a_streaming_handle() -> None:
    handle = _Handle()
    client = StreamClient(handle)
    meta = RequestMeta({"x-request-id": "r"})
    assert client.stream(Endpoint.RESPONSES, {"model": "m"}, meta) == "a response generator"
    assert handle.stream_option is True
    assert handle.calls == [(Endpoint.RESPONSES, {"model": "m"}, meta)]
    assert client.deployment_name == "llm-m"


def test_cancel_closes_the_generator() -> None:
    """Closing the generator is what makes vLLM abort the request and free its KV cache."""
    target = Counter()

    async def run() -> None:
        stream = _stream(target, {"n": 1000})
        assert await stream.__anext__() == "data: 0\n\n"
        stream.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert target.ended == ["closed", "finally"]
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    asyncio.run(run())


def test_cancel_of_a_finished_stream_is_harmless() -> None:
    target = Counter()

    async def run() -> None:
        stream = _stream(target, {"n": 2})
        assert len(await _collect(stream)) == 2
        stream.cancel()
        await asyncio.sleep(0)

    asyncio.run(run())
    assert target.ended == ["exhausted", "finally"]


def test_cancel_without_a_running_loop_does_not_raise() -> None:
    stream = _stream(Counter(), {"n": 2})
    stream.cancel()  # e.g. from a finalizer after the loop is gone


class SlowClose:
    """A generator whose cleanup awaits, like vLLM's abort does; the future it waits
    on is referenced only by the task closing it."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.pending = None

    def respond(self, endpoint: Endpoint, body: dict, meta: RequestMeta):
        return self.count(body["n"])

    async def count(self, n: int):
        try:
            for i in range(n):
                await asyncio.sleep(0)
                yield i
        finally:
            future = asyncio.get_running_loop().create_future()
            self.pending = weakref.ref(future)
            await future
            self.ended.append("closed")


def test_cancel_finishes_closing_even_if_nothing_else_holds_the_task() -> None:
    """The loop keeps only weak references to tasks: an unreferenced close can be
    garbage-collected half-way, leaving the engine generating for nobody."""
    target = SlowClose()

    async def run() -> None:
        stream = _stream(target, {"n": 1000})
        await stream.__anext__()
        stream.cancel()
        del stream
        while target.pending is None:
            await asyncio.sleep(0)
        gc.collect()
        future = target.pending()
        assert future is not None, "the closing task was garbage-collected"
        future.set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(run())
    assert target.ended == ["closed"]
