"""A request's deadline over a token stream, with one timer per stream.

``asyncio.timeout_at`` around each wait for the next chunk arms and cancels a
timer per chunk: at 32 concurrent streams that was 5 % of the ingress's
Python time (py-spy, see docs/performance.md). ``StreamDeadline`` arms one
timer for the whole stream and keeps asyncio's timeout semantics for the
waits: a wait cut by the deadline raises ``TimeoutError``; a cancellation
from elsewhere (the client left) stays a ``CancelledError``.

Only waits are timed. A deadline that passes while the relay is parked at a
``yield`` (the response writer is sending) cancels nothing; the next wait
raises ``TimeoutError`` before it starts. Cancelling the writer mid-send
would cut the stream without its error event.
"""

from __future__ import annotations

import asyncio
from typing import Any


class StreamDeadline:
    def __init__(self, when: float):
        """``when`` is in the running loop's clock (``loop.time()``)."""
        self._when = when
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None
        self._waiting = False
        self._cut = False
        """The deadline cancelled the task during a wait (not yet accounted for)."""
        self.expired = False

    async def next(self, stream: Any) -> Any:
        """``await stream.__anext__()``, bounded by the deadline."""
        if self._timer is None:  # armed by the task that iterates the stream
            self._task = asyncio.current_task()
            self._timer = asyncio.get_running_loop().call_at(self._when, self._expire)
        if self.expired:
            raise TimeoutError
        assert self._task is not None
        cancelling = self._task.cancelling()
        self._waiting = True
        try:
            return await stream.__anext__()
        except asyncio.CancelledError:
            # A timeout only when the deadline cut this wait and nobody else
            # cancelled the task too (asyncio.Timeout's test). A stream that
            # raises CancelledError itself, or a client that left, stays so.
            if self._cut and self._uncut() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = False
            if self._cut:  # the stream swallowed the cancellation
                self._uncut()

    def _uncut(self) -> int:
        """Take back the deadline's cancellation; the cancellations left."""
        self._cut = False
        assert self._task is not None
        return self._task.uncancel()

    def _expire(self) -> None:
        self.expired = True
        if self._waiting and self._task is not None:
            self._cut = True
            self._task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
