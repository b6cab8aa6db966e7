"""Graceful drain of the ingress before the app stops.

``serve.shutdown()`` stops HAProxy together with the replicas, which cuts
every open stream. So ``llmserve run`` (on SIGTERM/SIGINT) and ``llmserve
shutdown`` drain first:

1. they set a flag in Ray's key-value store (GCS), which every ingress
   replica watches;
2. an ingress replica that sees it answers new requests with 503 and
   ``Retry-After`` (``/health`` too, so load balancers take it out) and
   reports how many requests it still has in flight;
3. the CLI waits until none are in flight, or the ingress's
   ``graceful_shutdown_timeout_s`` has passed, and only then stops Serve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from llmserve.compat.ray import kv_delete, kv_get, kv_keys, kv_put

logger = logging.getLogger("llmserve")

NAMESPACE = "llmserve"
_FLAG = b"draining"
_INFLIGHT = "inflight:"
WATCH_PERIOD_S = 0.5


def request_drain() -> None:
    """Tell every ingress replica to stop taking requests (driver side)."""
    kv_put(_FLAG, b"1", NAMESPACE)


def wait_drained(timeout_s: float) -> tuple[bool, float]:
    """Wait until no ingress replica has a request in flight; (drained, seconds)."""
    start = time.monotonic()
    # Give every replica a chance to see the flag and report.
    time.sleep(2 * WATCH_PERIOD_S)
    while True:
        keys = kv_keys(_INFLIGHT.encode(), NAMESPACE)
        counts = [kv_get(k, NAMESPACE) for k in keys]
        if sum(int(c or 0) for c in counts) == 0:
            return True, time.monotonic() - start
        if time.monotonic() - start >= timeout_s:
            return False, time.monotonic() - start
        time.sleep(WATCH_PERIOD_S)


def clear() -> None:
    """Forget the flag and the counts (a new app on the same cluster starts clean)."""
    with contextlib.suppress(Exception):
        for key in [_FLAG, *kv_keys(_INFLIGHT.encode(), NAMESPACE)]:
            kv_delete(key, NAMESPACE)


class DrainWatch:
    """In an ingress replica: counts requests in flight and watches the flag."""

    def __init__(self, replica_id: str):
        self.key = f"{_INFLIGHT}{replica_id}".encode()
        self.draining = False
        self.inflight = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_PERIOD_S)
            try:
                if not self.draining:
                    flag = await asyncio.to_thread(kv_get, _FLAG, NAMESPACE)
                    if flag:
                        logger.warning("draining: new requests get 503 from now on")
                        self.draining = True
                if self.draining:
                    await asyncio.to_thread(
                        kv_put, self.key, str(self.inflight).encode(), NAMESPACE
                    )
            except Exception:  # no GCS (unit tests, a cluster going away): keep serving
                logger.debug("drain watch: key-value store not reachable", exc_info=True)
