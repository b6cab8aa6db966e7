"""ReplicaCount: how many ingress replicas share the rate limits, read in the background."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmserve.ingress.replicas import ReplicaCount

pytestmark = pytest.mark.unit


async def _read_done(count: ReplicaCount) -> None:
    """Wait (bounded) for the background read the last call started, and its refresh_s."""
    for _ in range(5000):
        if count._task is None:
            break
        await asyncio.sleep(0.001)
    assert count._task is None
    await asyncio.sleep(0.02)  # > refresh_s: the next call starts another read


def test_the_count_starts_configured_and_follows_serve_without_blocking() -> None:
    answers = iter([3, 0, 2])
    threads: set[str] = set()

    def fetch() -> int:
        threads.add(threading.current_thread().name)
        return next(answers)

    async def run() -> list[int]:
        count = ReplicaCount(2, fetch, refresh_s=0.01)
        seen = [count()]  # the configured count; the first read starts in the background
        await _read_done(count)
        seen.append(count())  # 3; and a new read starts (answers 0: no status yet)
        await _read_done(count)
        seen.append(count())  # 0 is no answer: still 3
        await _read_done(count)
        seen.append(count())
        return seen

    assert asyncio.run(run()) == [2, 3, 3, 2]
    assert threading.main_thread().name not in threads  # never on the event loop


def test_a_failing_read_keeps_the_last_count() -> None:
    def fetch() -> int:
        raise RuntimeError("controller unreachable")

    async def run() -> int:
        count = ReplicaCount(4, fetch, refresh_s=0.01)
        count()
        await _read_done(count)
        return count()

    assert asyncio.run(run()) == 4


def test_outside_a_replica_the_count_is_fixed() -> None:
    assert ReplicaCount(0)() == 1  # never below one
    assert ReplicaCount(3)() == 3
