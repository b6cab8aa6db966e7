"""Admission for what the ingress serves in its own process.

Ray Serve bounds every handle call (``max_ongoing_requests`` per replica,
``max_queued_requests`` per caller). A fused model and its in-process RAG
pipelines are not behind a handle, so the ingress bounds them here, with the
same two numbers from their config: that many run, that many more wait, the
rest are refused at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from llmserve.observability.metrics import ADMITTED
from llmserve.openai.errors import overloaded


class AdmissionGate:
    def __init__(self, name: str, max_ongoing: int, max_queued: int):
        self.name = name
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(max_ongoing)
        self._waiting = 0
        self._running_gauge = ADMITTED.labels(name, "running")
        self._waiting_gauge = ADMITTED.labels(name, "waiting")

    @property
    def waiting(self) -> int:
        return self._waiting

    async def enter(self, timeout_s: float) -> Callable[[], None]:
        """Take a slot, waiting at most ``timeout_s``; return the (idempotent) release.

        Raises a 429 ``APIError`` when the queue is full, and ``TimeoutError``
        when no slot frees up in time.
        """
        if self._slots.locked():
            if self._waiting >= self.max_queued:
                raise overloaded(self.name)
            self._waiting += 1
            self._waiting_gauge.inc()
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout_s)
            finally:
                self._waiting -= 1
                self._waiting_gauge.dec()
        else:
            await self._slots.acquire()
        self._running_gauge.inc()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._slots.release()
                self._running_gauge.dec()

        return release
