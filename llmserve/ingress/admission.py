"""Admission for what the ingress serves in its own process, in the tenants' priority order.

Ray Serve bounds every handle call (``max_ongoing_requests`` per replica,
``max_queued_requests`` per caller). A fused model and its in-process RAG
pipelines are not behind a handle, so the ingress bounds them here, with the
same two numbers from their config: that many run, that many more wait, the
rest are refused at once (429).

With tenants of several priorities (``ingress.tenants[].priority``):

1. **Order.** A freed slot goes to the highest class waiting, first come
   first served within a class.
2. **Reserve.** ``low`` never takes the last ``priority_reserved_share`` of the
   running slots, nor of the queue places: ``normal`` and ``high`` requests
   arriving at a busy model find room.
3. **Low is refused first.** A request that finds the queue full takes the
   place of the newest waiting request of a lower class, which gets 429 (it
   did no work); only when none is waiting is the newcomer refused.
4. **Aging.** A request that has waited ``priority_aging_s`` goes ahead of
   everything that arrived after it, whatever its class and the reserve: a
   busy high-priority tenant delays lower ones, it never starves them.

When every caller is ``normal`` (no tenants, or no priorities set) this is a
plain FIFO queue, as before.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from llmserve.literals import PRIORITIES, Priority
from llmserve.observability.metrics import ADMITTED
from llmserve.openai.errors import overloaded

_RANK = {priority: rank for rank, priority in enumerate(PRIORITIES)}


class _Waiter:
    __slots__ = ("arrived", "future", "priority")

    def __init__(self, priority: Priority, arrived: float):
        self.priority = priority
        self.arrived = arrived
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class AdmissionGate:
    def __init__(
        self,
        name: str,
        max_ongoing: int,
        max_queued: int,
        reserved_share: float = 0.0,
        aging_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.max_ongoing = max_ongoing
        self.max_queued = max_queued
        self.reserved_slots = int(reserved_share * max_ongoing)
        self.reserved_places = int(reserved_share * max_queued)
        self.aging_s = aging_s
        self._clock = clock
        self.running = 0
        self._queues: dict[Priority, deque[_Waiter]] = {p: deque() for p in PRIORITIES}
        self._running_gauge = ADMITTED.labels(name, "running")
        self._waiting_gauge = ADMITTED.labels(name, "waiting")

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def enter(self, timeout_s: float, priority: Priority = "normal") -> Callable[[], None]:
        """Take a slot, waiting at most ``timeout_s``; return the (idempotent) release.

        Raises a 429 ``APIError`` when there is no room to wait (or a higher class took
        this request's place in the queue), and ``TimeoutError`` when no slot frees up in time.
        """
        self._dispatch()  # waiters that aged since the last event go first
        if not self._ahead_of(priority) and self._may_start(priority, aged=False):
            self._start()
            return self._releaser()
        waiter = self._queue(priority)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter.future
        except BaseException:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release_slot()  # granted as it gave up: pass the slot on
            else:
                self._remove(waiter)
            raise
        return self._releaser()

    def _may_start(self, priority: Priority, aged: bool) -> bool:
        free = self.max_ongoing - self.running
        if priority == "low" and not aged:
            return free > self.reserved_slots
        return free > 0

    def _ahead_of(self, priority: Priority) -> bool:
        """Whether a waiting request goes before a newcomer of ``priority``."""
        rank = _RANK[priority]
        aged = self._clock() - self.aging_s
        return any(
            queue and (_RANK[p] <= rank or queue[0].arrived <= aged)
            for p, queue in self._queues.items()
        )

    def _queue(self, priority: Priority) -> _Waiter:
        free = self.max_queued - self.waiting
        room = free > self.reserved_places if priority == "low" else free > 0
        if not room:
            self._displace_below(priority)  # raises when nobody below can give way
        waiter = _Waiter(priority, self._clock())
        self._queues[priority].append(waiter)
        self._waiting_gauge.inc()
        # Aging may let it start while no slot frees and nobody arrives: look again then.
        asyncio.get_running_loop().call_later(self.aging_s, self._dispatch)
        return waiter

    def _displace_below(self, priority: Priority) -> None:
        for lower in reversed(PRIORITIES[_RANK[priority] + 1 :]):
            queue = self._queues[lower]
            if queue:
                victim = queue.pop()  # the newest of the lowest class waiting
                self._waiting_gauge.dec()
                if not victim.future.done():  # else it is leaving anyway (timed out, cancelled)
                    victim.future.set_exception(overloaded(self.name))
                return
        raise overloaded(self.name)

    def _remove(self, waiter: _Waiter) -> None:
        queue = self._queues[waiter.priority]
        if waiter in queue:
            queue.remove(waiter)
            self._waiting_gauge.dec()

    def _next(self) -> _Waiter | None:
        """The waiter that gets the next free slot, if any may take it now."""
        heads = [queue[0] for queue in self._queues.values() if queue]
        if not heads:
            return None
        oldest = min(heads, key=lambda w: w.arrived)
        if self._clock() - oldest.arrived >= self.aging_s:
            return oldest
        first = min(heads, key=lambda w: _RANK[w.priority])
        return first if self._may_start(first.priority, aged=False) else None

    def _dispatch(self) -> None:
        while self.running < self.max_ongoing and (waiter := self._next()) is not None:
            self._queues[waiter.priority].popleft()
            self._waiting_gauge.dec()
            if not waiter.future.done():  # else it gave up a moment ago and is leaving
                self._start()
                waiter.future.set_result(None)

    def _start(self) -> None:
        self.running += 1
        self._running_gauge.inc()

    def _release_slot(self) -> None:
        self.running -= 1
        self._running_gauge.dec()
        self._dispatch()

    def _releaser(self) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._release_slot()

        return release
