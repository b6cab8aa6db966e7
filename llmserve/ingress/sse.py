"""The ingress's SSE response: sse-starlette's, without a cancel scope per chunk.

sse-starlette 3.7 sends every chunk inside ``anyio.move_on_after(send_timeout)``,
even when there is no send timeout. That scope (and anyio's lookup of the
running async library behind it) was 8 % of the ingress's Python time at 32
concurrent streams (py-spy, see docs/performance.md). Without a send timeout
it does nothing, so ``_send_with_timeout`` sends directly then. The ping task,
the disconnect listener and the shutdown handling are sse-starlette's own.
"""

from __future__ import annotations

from sse_starlette import EventSourceResponse
from starlette.types import Message, Send


class EventStream(EventSourceResponse):
    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)
