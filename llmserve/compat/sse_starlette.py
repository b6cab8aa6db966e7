"""sse-starlette internals llmserve relies on: the ingress's SSE response.

sse-starlette 3.7 sends every chunk inside ``anyio.move_on_after(send_timeout)``,
even when there is no send timeout. That scope (and anyio's lookup of the
running async library behind it) was 8 % of the ingress's Python time at 32
concurrent streams (py-spy, see docs/performance.md). Without a send timeout
it does nothing, so ``EventStream`` overrides the private
``_send_with_timeout``, through which sse-starlette sends every chunk, to
send directly then, keeping its bookkeeping of interrupted sends. The ping
task, the disconnect listener and the shutdown handling are sse-starlette's own. The canary is in
``tests/unit/compat/test_sse_starlette.py``.
"""

from __future__ import annotations

from sse_starlette import EventSourceResponse
from starlette.types import Message, Send


class EventStream(EventSourceResponse):
    """sse-starlette's ``EventSourceResponse`` without a cancel scope per chunk
    when there is no send timeout."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is not None:
            await super()._send_with_timeout(send, message)
            return
        try:
            await send(message)
        except BaseException:
            # As sse-starlette's own method does: a send that never completed
            # must not be followed by the closing one.
            self._send_interrupted = True
            raise
