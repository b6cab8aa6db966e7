"""sse-starlette internals llmserve relies on: the ingress's SSE response.

sse-starlette 3.7 sends every chunk inside ``anyio.move_on_after(send_timeout)``,
even when there is no send timeout. That scope (and anyio's lookup of the
running async library behind it) was 8 % of the ingress's Python time at 32
concurrent streams (py-spy, see docs/performance.md). ``EventStream``
overrides the private ``_send_with_timeout``, through which sse-starlette
sends every chunk, to send directly, keeping its bookkeeping of interrupted
sends. The ping task, the disconnect listener and the shutdown handling are
sse-starlette's own. The canary is in ``tests/unit/compat/test_sse_starlette.py``.

Slow readers are cut with one watchdog per stream instead of a scope per send:
each send records when it started, and a task that wakes a few times per
``stall_timeout_s`` ends the response when a send has been stuck longer (the
client stopped reading, and every buffer between it and us is full). The
watchdog runs as sse-starlette's ``data_sender_callable``, inside its task
group, so its error cancels the stream like a failed send does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

logger = logging.getLogger("llmserve")


class SendStalled(TimeoutError):
    """A send to the client made no progress for ``stall_timeout_s``."""


class EventStream(EventSourceResponse):
    """sse-starlette's ``EventSourceResponse`` with no cancel scope per chunk, a
    stall watchdog, and a close hook that runs however the response ends."""

    def __init__(
        self,
        content: Any,
        *,
        stall_timeout_s: float | None = None,
        on_close: Callable[[], None] | None = None,
        **options: Any,
    ):
        watchdog = self._watch_sends if stall_timeout_s is not None else None
        super().__init__(content, data_sender_callable=watchdog, **options)
        self.stall_timeout_s = stall_timeout_s
        self._on_close = on_close
        self._sending_since: float | None = None
        self.stalled = False

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is not None:
            await super()._send_with_timeout(send, message)
            return
        self._sending_since = time.monotonic()
        try:
            await send(message)
        except BaseException:
            # As sse-starlette's own method does: a send that never completed
            # must not be followed by the closing one.
            self._send_interrupted = True
            raise
        finally:
            self._sending_since = None

    async def _watch_sends(self) -> None:
        """End the response once a send has been stuck for ``stall_timeout_s``."""
        assert self.stall_timeout_s is not None
        period = max(self.stall_timeout_s / 4, 0.05)
        while True:
            await anyio.sleep(period)
            started = self._sending_since
            if started is not None and time.monotonic() - started > self.stall_timeout_s:
                self.stalled = True
                raise SendStalled(f"the client read nothing for {self.stall_timeout_s:g} s")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendStalled as exc:
            # The connection is dropped (the response is left unfinished); the
            # stream's generator was closed by sse-starlette on the way out.
            self._send_interrupted = True
            logger.info("closing a stream whose client stopped reading: %s", exc)
        finally:
            # The body iterator's own cleanup never runs if it was never started
            # (the client left before the first byte): this always does.
            if self._on_close is not None:
                self._on_close()
