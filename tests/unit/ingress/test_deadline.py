"""StreamDeadline: one timer per stream; only the waits for chunks are timed."""

from __future__ import annotations

import asyncio

import pytest

from llmserve.ingress.deadline import StreamDeadline

pytestmark = pytest.mark.unit


class Chunks:
    """An async iterator whose chunk ``i`` arrives after ``delays[i]`` seconds."""

    def __init__(self, *delays: float) -> None:
        self.delays = list(delays)
        self.waits = 0

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> int:
        self.waits += 1
        if not self.delays:
            raise StopAsyncIteration
        await asyncio.sleep(self.delays.pop(0))
        return len(self.delays)


def _in(seconds: float) -> StreamDeadline:
    return StreamDeadline(asyncio.get_running_loop().time() + seconds)


def test_chunks_within_the_deadline_pass_through() -> None:
    async def run() -> list[int]:
        deadline, chunks, got = _in(5), Chunks(0, 0.01, 0), []
        with pytest.raises(StopAsyncIteration):
            while True:
                got.append(await deadline.next(chunks))
        deadline.close()
        return got

    assert asyncio.run(run()) == [2, 1, 0]


def test_a_wait_past_the_deadline_is_a_timeout_and_uncancels_the_task() -> None:
    async def run() -> None:
        deadline = _in(0.05)
        assert await deadline.next(Chunks(0)) == 0
        with pytest.raises(TimeoutError):
            await deadline.next(Chunks(3600))
        assert asyncio.current_task().cancelling() == 0
        await asyncio.sleep(0)  # not cancelled: the task goes on

    asyncio.run(run())


def test_a_deadline_that_passes_outside_a_wait_cancels_nothing() -> None:
    """The relay is parked at a yield (the writer sends): that work finishes, and
    the next wait is a timeout without asking the stream for anything."""

    async def run() -> None:
        deadline, chunks = _in(0.05), Chunks(0, 0)
        await deadline.next(chunks)
        await asyncio.sleep(0.2)  # the writer's send, across the deadline
        assert deadline.expired
        with pytest.raises(TimeoutError):
            await deadline.next(chunks)
        assert chunks.waits == 1

    asyncio.run(run())


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    """The client left: CancelledError, not a timeout, with or without the deadline passed."""

    async def wait(deadline_s: float) -> None:
        await _in(deadline_s).next(Chunks(3600))

    async def run(deadline_s: float) -> None:
        task = asyncio.create_task(wait(deadline_s))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run(3600))

    async def both() -> None:
        """The client leaves in the same loop pass as the deadline fires."""
        task = asyncio.create_task(wait(0.05))
        await asyncio.sleep(0)
        asyncio.get_running_loop().call_at(asyncio.get_running_loop().time() + 0.05, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(both())


def test_a_stream_that_raises_cancelled_error_itself_is_no_timeout() -> None:
    """A Serve stream whose request was cancelled elsewhere raises CancelledError
    without this task being cancelled: that is not the deadline's doing."""

    class Cancelled(Chunks):
        async def __anext__(self) -> int:
            raise asyncio.CancelledError

    async def run() -> None:
        with pytest.raises(asyncio.CancelledError):
            await _in(3600).next(Cancelled())

    asyncio.run(run())


def test_a_closed_deadline_fires_no_more() -> None:
    async def run() -> None:
        deadline = _in(0.05)
        await deadline.next(Chunks(0))
        deadline.close()
        await asyncio.sleep(0.1)
        assert not deadline.expired

    asyncio.run(run())
