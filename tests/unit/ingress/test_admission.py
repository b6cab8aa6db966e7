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
