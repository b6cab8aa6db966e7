"""How many ingress replicas share the tenants' rate limits (``ratelimit.py``).

Serve's controller knows; asking it costs a call, so the answer is kept for a
few seconds and refreshed in the background, never on a request's path. Until
the first answer, the count is the configured one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

logger = logging.getLogger("llmserve")

REFRESH_S = 5.0


class ReplicaCount:
    """Callable: the number of replicas now, as last read by ``fetch`` (in a thread)."""

    def __init__(
        self, initial: int, fetch: Callable[[], int] | None = None, refresh_s: float = REFRESH_S
    ):
        self._count = max(1, initial)
        self._fetch = fetch
        self._refresh_s = refresh_s
        self._read_at = float("-inf")
        self._task: asyncio.Task | None = None

    def __call__(self) -> int:
        due = time.monotonic() - self._read_at >= self._refresh_s
        if self._fetch is not None and self._task is None and due:
            # No event loop (config checks, tests): keep the count.
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.get_running_loop().create_task(self._refresh())
        return self._count

    async def _refresh(self) -> None:
        assert self._fetch is not None
        try:
            count = await asyncio.wait_for(asyncio.to_thread(self._fetch), 2 * self._refresh_s)
            if count >= 1:
                self._count = count
        except Exception:
            logger.warning("could not read the number of ingress replicas", exc_info=True)
        finally:
            self._read_at = time.monotonic()
            self._task = None


def serve_replica_count(app_name: str, deployment: str) -> int:
    """Replicas of ``deployment`` that serve or are about to (all but the stopping ones):
    counting one that is still starting errs towards the lower share, never above the limit."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    status = app.deployments.get(deployment) if app is not None else None
    if status is None:
        return 0
    return sum(n for state, n in status.replica_states.items() if state != "STOPPING")
