"""What ``/health`` reports: 200 only while every engine behind the ingress can serve.

A load balancer acts on it, so it must answer at any load and never wait on
a request slot: the fused engine is asked directly (a flag check in vLLM),
and the deployments behind handles are judged from Serve's controller, which
health-checks every replica itself. The controller's answer is cached for a
couple of seconds so that frequent probes cost nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger("llmserve")


class HealthMonitor:
    def __init__(
        self,
        app_name: str,
        deployments: list[str],
        local_check: Callable[[], Awaitable[None]] | None = None,
        cache_s: float = 2.0,
        timeout_s: float = 0.5,
    ):
        self.app_name = app_name
        self.deployments = list(deployments)
        self.local_check = local_check
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._checked_at = float("-inf")
        self._missing: list[str] = []
        self._refresh: asyncio.Task | None = None

    async def problem(self) -> str | None:
        """Why the app cannot serve right now, or None when it can."""
        if self.local_check is not None:
            try:
                await asyncio.wait_for(self.local_check(), self.timeout_s)
            except Exception as exc:
                logger.warning("health: the fused engine is not healthy: %r", exc)
                return "the model engine in the ingress is not healthy"
        missing = await self.missing_deployments()
        if missing:
            return f"no healthy replica for: {', '.join(missing)}"
        return None

    def known_missing(self, deployment: str) -> bool:
        """Whether ``deployment`` had no running replica at the last look; never waits.

        A request for it would otherwise wait in Serve's router until a
        replica comes back (or its timeout), instead of getting a 503 now.
        """
        if self._refresh is None and time.monotonic() - self._checked_at >= self.cache_s:
            self._refresh = asyncio.create_task(self.missing_deployments())
            self._refresh.add_done_callback(self._refreshed)
        return deployment in self._missing

    def _refreshed(self, _: asyncio.Task) -> None:
        self._refresh = None

    async def missing_deployments(self) -> list[str]:
        if not self.deployments or time.monotonic() - self._checked_at < self.cache_s:
            return self._missing
        try:
            running = await asyncio.wait_for(asyncio.to_thread(self._running), self.timeout_s * 2)
        except Exception:
            # The controller being slow says nothing about the engines; keep
            # the last answer rather than flap.
            logger.warning("health: Serve's controller did not answer", exc_info=True)
            return self._missing
        self._missing = [d for d in self.deployments if running.get(d, 0) < 1]
        self._checked_at = time.monotonic()
        return self._missing

    def _running(self) -> dict[str, int]:
        from ray import serve

        app = serve.status().applications.get(self.app_name)
        if app is None:
            return {}
        return {
            name: int(dep.replica_states.get("RUNNING", 0)) for name, dep in app.deployments.items()
        }
