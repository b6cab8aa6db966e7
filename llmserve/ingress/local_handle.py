"""A stand-in for a streaming ``DeploymentHandle`` that calls an object in this process.

The ingress talks to every model through the same small surface
(``handle.options(stream=True).<method>.remote(body)`` -> async iterator with
``cancel()``). For the fused model, whose engine lives in the ingress replica
itself, this adapter provides that surface without any Ray hop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any


class LocalHandle:
    def __init__(self, target: Any):
        self._target = target

    def options(self, **_: Any) -> LocalHandle:
        return self

    def __getattr__(self, method: str) -> _LocalMethod:
        return _LocalMethod(getattr(self._target, method))


class _LocalMethod:
    def __init__(self, fn):
        self._fn = fn

    def remote(self, *args: Any, **kwargs: Any) -> LocalStream:
        return LocalStream(self._fn(*args, **kwargs))


# Tasks closing abandoned generators. The event loop keeps only weak
# references to tasks, so without this a close could be garbage-collected
# before it runs, and the engine would keep generating for nobody.
_closing: set[asyncio.Task] = set()


class LocalStream:
    """Async iterator over a local async generator; ``cancel()`` closes it,
    which (like a cancelled Serve stream) makes vLLM abort the request."""

    def __init__(self, gen: AsyncGenerator):
        self._gen = gen

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> Any:
        return await self._gen.__anext__()

    def cancel(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing is iterating it any more
            return
        task = loop.create_task(self._close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _close(self) -> None:
        # A generator another task is iterating refuses aclose(); that task's
        # own cancellation closes it.
        with contextlib.suppress(RuntimeError):
            await self._gen.aclose()
