"""LocalHandle: the in-process stand-in for a streaming DeploymentHandle (fused model)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from llmserve.ingress.local_handle import LocalHandle

pytestmark = pytest.mark.unit


class Counter:
    """Like LLMServer: async generator methods; records how each stream ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

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


def test_a_stream_yields_every_item_in_order() -> None:
    target = Counter()
    handle = LocalHandle(target)
    stream = handle.options(stream=True).count.remote(3, start=5)
    assert asyncio.run(_collect(stream)) == ["data: 5\n\n", "data: 6\n\n", "data: 7\n\n"]
    assert target.ended == ["exhausted", "finally"]


def test_options_return_a_handle_to_the_same_target() -> None:
    target = Counter()
    handle = LocalHandle(target).options(stream=True, multiplexed_model_id="x")
    assert asyncio.run(_collect(handle.options().count.remote(1))) == ["data: 0\n\n"]


def test_an_exception_in_the_target_reaches_the_consumer() -> None:
    stream = LocalHandle(Counter()).options(stream=True).fail.remote({"a": 1})

    async def run() -> None:
        assert await stream.__anext__() == {"a": 1}
        with pytest.raises(ValueError, match="bad request"):
            await stream.__anext__()

    asyncio.run(run())


def test_an_unknown_method_fails_when_named() -> None:
    with pytest.raises(AttributeError):
        LocalHandle(Counter()).options(stream=True).nope  # noqa: B018


def test_cancel_closes_the_generator() -> None:
    """Closing the generator is what makes vLLM abort the request and free its KV cache."""
    target = Counter()

    async def run() -> None:
        stream = LocalHandle(target).options(stream=True).count.remote(1000)
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
        stream = LocalHandle(target).options(stream=True).count.remote(2)
        assert len(await _collect(stream)) == 2
        stream.cancel()
        await asyncio.sleep(0)

    asyncio.run(run())
    assert target.ended == ["exhausted", "finally"]


def test_cancel_without_a_running_loop_does_not_raise() -> None:
    stream = LocalHandle(Counter()).options(stream=True).count.remote(2)
    stream.cancel()  # e.g. from a finalizer after the loop is gone


class SlowClose:
    """A generator whose cleanup awaits, like vLLM's abort does; the future it waits
    on is referenced only by the task closing it."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.pending = None

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
        stream = LocalHandle(target).options(stream=True).count.remote(1000)
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
