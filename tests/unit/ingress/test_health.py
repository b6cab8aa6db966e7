"""HealthMonitor: /health is 503 while the fused engine or any deployment behind is down."""

from __future__ import annotations

import asyncio

import pytest

from llmserve.ingress.health import HealthMonitor

pytestmark = pytest.mark.unit


class Monitor(HealthMonitor):
    """Serve's controller replaced by a dict of running replicas per deployment."""

    def __init__(self, running: dict[str, int], **kwargs):
        super().__init__("app", ["llm-a", "retriever-b"], **kwargs)
        self.running, self.asked = running, 0

    def _running(self) -> dict[str, int]:
        self.asked += 1
        if self.running is None:
            raise ConnectionError("controller gone")
        return dict(self.running)


def test_healthy_when_every_deployment_has_a_running_replica() -> None:
    assert asyncio.run(Monitor({"llm-a": 1, "retriever-b": 2}).problem()) is None


def test_a_deployment_without_a_running_replica_is_named() -> None:
    problem = asyncio.run(Monitor({"llm-a": 1, "retriever-b": 0}).problem())
    assert problem == "no healthy replica for: retriever-b"


def test_a_dead_fused_engine_is_unhealthy() -> None:
    async def dead() -> None:
        raise RuntimeError("EngineDeadError")

    monitor = Monitor({"llm-a": 1, "retriever-b": 1}, local_check=dead)
    assert "engine" in asyncio.run(monitor.problem())


def test_the_controller_is_asked_at_most_once_per_cache_period() -> None:
    async def run(monitor: Monitor) -> None:
        for _ in range(5):
            await monitor.problem()

    monitor = Monitor({"llm-a": 1, "retriever-b": 1}, cache_s=60)
    asyncio.run(run(monitor))
    assert monitor.asked == 1


def test_an_unreachable_controller_keeps_the_last_answer() -> None:
    monitor = Monitor({"llm-a": 0, "retriever-b": 1}, cache_s=0)
    assert asyncio.run(monitor.problem()) == "no healthy replica for: llm-a"
    monitor.running = None
    assert asyncio.run(monitor.problem()) == "no healthy replica for: llm-a"
