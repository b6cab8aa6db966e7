"""AdmissionGate: what the ingress uses to bound a fused model and its in-process pipelines."""

from __future__ import annotations

import asyncio

import pytest

from llmserve.ingress.admission import AdmissionGate
from llmserve.openai.errors import APIError

pytestmark = pytest.mark.unit


def test_runs_max_ongoing_queues_max_queued_refuses_the_rest() -> None:
    async def run() -> tuple[list, list]:
        gate = AdmissionGate("m", max_ongoing=2, max_queued=1)
        running = [await gate.enter(5), await gate.enter(5)]
        queued = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        assert gate.waiting == 1
        with pytest.raises(APIError) as refused:
            await gate.enter(5)
        assert refused.value.status == 429
        running[0]()  # one finishes: the queued one gets its slot
        third = await asyncio.wait_for(queued, 1)
        assert gate.waiting == 0
        return running, [third]

    asyncio.run(run())


def test_release_is_idempotent() -> None:
    async def run() -> None:
        gate = AdmissionGate("m", max_ongoing=1, max_queued=0)
        release = await gate.enter(1)
        release()
        release()  # a second call must not free a slot it does not hold
        await gate.enter(1)
        with pytest.raises(APIError):
            await gate.enter(1)

    asyncio.run(run())


def test_a_queued_request_times_out_and_leaves_the_queue() -> None:
    async def run() -> None:
        gate = AdmissionGate("m", max_ongoing=1, max_queued=1)
        await gate.enter(1)
        with pytest.raises(TimeoutError):
            await gate.enter(0.05)
        assert gate.waiting == 0

    asyncio.run(run())


def test_a_cancelled_waiter_leaves_the_queue() -> None:
    async def run() -> None:
        gate = AdmissionGate("m", max_ongoing=1, max_queued=1)
        await gate.enter(1)
        waiter = asyncio.create_task(gate.enter(5))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0

    asyncio.run(run())


# --- priorities (ingress.tenants[].priority) ----------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _waiting(gate: AdmissionGate, priority: str, order: list[str], name: str):
    """A task that waits for a slot, then notes ``name`` in ``order`` and keeps the slot."""

    async def wait():
        release = await gate.enter(5, priority)  # type: ignore[arg-type]
        order.append(name)
        return release

    task = asyncio.create_task(wait())
    await asyncio.sleep(0)
    return task


def test_freed_slots_go_to_the_highest_class_first_come_first_served() -> None:
    async def run() -> list[str]:
        gate = AdmissionGate("m", max_ongoing=1, max_queued=10)
        release = await gate.enter(5, "normal")
        order: list[str] = []
        arrivals = [
            ("low", "low-1"),
            ("normal", "normal-1"),
            ("high", "high-1"),
            ("low", "low-2"),
            ("high", "high-2"),
        ]
        tasks = {name: await _waiting(gate, priority, order, name) for priority, name in arrivals}
        for _ in arrivals:  # one slot: each finishes, the next in line gets it
            release()
            await asyncio.sleep(0)
            release = await tasks[order[-1]]
        return order

    order = asyncio.run(run())
    assert order == ["high-1", "high-2", "normal-1", "low-1", "low-2"]


def test_low_never_takes_the_reserved_slots_or_places() -> None:
    async def run() -> None:
        # 4 slots and 4 places, a quarter reserved: low runs 3 and queues 3 at most
        gate = AdmissionGate("m", max_ongoing=4, max_queued=4, reserved_share=0.25)
        for _ in range(3):
            await gate.enter(5, "low")
        waiters = [asyncio.create_task(gate.enter(5, "low")) for _ in range(3)]
        await asyncio.sleep(0)
        assert (gate.running, gate.waiting) == (3, 3)
        with pytest.raises(APIError) as refused:
            await gate.enter(5, "low")
        assert refused.value.status == 429
        # the reserve is there for the others: normal runs at once, then queues
        await gate.enter(5, "normal")
        assert gate.running == 4
        high = asyncio.create_task(gate.enter(5, "high"))
        await asyncio.sleep(0)
        assert gate.waiting == 4
        for task in [*waiters, high]:
            task.cancel()

    asyncio.run(run())


def test_a_full_queue_refuses_the_newest_of_the_lowest_class_first() -> None:
    async def run() -> None:
        gate = AdmissionGate("m", max_ongoing=1, max_queued=3)
        await gate.enter(5, "high")
        low_1 = asyncio.create_task(gate.enter(5, "low"))
        low_2 = asyncio.create_task(gate.enter(5, "low"))
        normal = asyncio.create_task(gate.enter(5, "normal"))
        await asyncio.sleep(0)
        assert gate.waiting == 3
        high = asyncio.create_task(gate.enter(5, "high"))
        await asyncio.sleep(0)
        with pytest.raises(APIError) as displaced:
            await low_2  # the newest low gave way
        assert displaced.value.status == 429
        assert not low_1.done() and not normal.done() and not high.done()
        high_2 = asyncio.create_task(gate.enter(5, "high"))
        await asyncio.sleep(0)
        with pytest.raises(APIError):
            await low_1
        high_3 = asyncio.create_task(gate.enter(5, "high"))
        await asyncio.sleep(0)
        with pytest.raises(APIError):
            await normal
        # a queue of the highest class only: the newcomer itself is refused
        with pytest.raises(APIError):
            await gate.enter(5, "high")
        # and a low one never displaces anyone
        with pytest.raises(APIError):
            await gate.enter(5, "low")
        assert gate.waiting == 3
        for task in (high, high_2, high_3):
            task.cancel()

    asyncio.run(run())


def test_a_request_that_waited_aging_s_goes_first_whatever_its_class() -> None:
    async def run() -> list[str]:
        clock = Clock()
        gate = AdmissionGate("m", max_ongoing=1, max_queued=10, aging_s=10, clock=clock)
        release = await gate.enter(5, "high")
        order: list[str] = []
        low = await _waiting(gate, "low", order, "low")
        clock.now = 4
        high = await _waiting(gate, "high", order, "high")
        clock.now = 10.5  # the low one has waited 10.5 s, the high one 6.5 s
        release()
        await asyncio.sleep(0)
        (await low)()
        await asyncio.sleep(0)
        await high
        return order

    assert asyncio.run(run()) == ["low", "high"]


def test_an_aged_low_request_takes_a_reserved_slot_without_any_event() -> None:
    async def run() -> None:
        # 2 slots, 1 reserved, 1 taken: a low request may not start, and waits; once it
        # has waited aging_s, the gate looks again by itself and lets it in
        gate = AdmissionGate("m", max_ongoing=2, max_queued=2, reserved_share=0.5, aging_s=0.05)
        await gate.enter(5, "normal")
        start = asyncio.get_running_loop().time()
        await gate.enter(5, "low")
        assert asyncio.get_running_loop().time() - start >= 0.05
        assert gate.running == 2

    asyncio.run(run())


def test_without_priorities_it_is_the_plain_fifo_queue() -> None:
    async def run() -> list[str]:
        gate = AdmissionGate("m", max_ongoing=1, max_queued=3, reserved_share=0.25)
        release = await gate.enter(5)
        order: list[str] = []
        tasks = [await _waiting(gate, "normal", order, str(i)) for i in range(3)]
        with pytest.raises(APIError):
            await gate.enter(5)
        for task in tasks:
            release()
            await asyncio.sleep(0)
            release = await task
        return order

    assert asyncio.run(run()) == ["0", "1", "2"]
