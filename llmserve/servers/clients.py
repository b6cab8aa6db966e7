"""The call side of ``protocol.py``: the only code that names a handle method.

A ``StreamClient`` calls a ``StreamingServer`` behind a Serve
``DeploymentHandle``; a ``LocalClient`` calls one in this process (the
ingress's fused model and the RAG routers that generate with it), with no
Ray hop. Both return an ``ItemStream``, so the ingress and the RAG router
cannot tell them apart. ``SearchClient``, ``EmbedClient`` and ``ScoreClient``
do the same for the unary calls of the RAG stages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from llmserve.servers.protocol import (
    Answer,
    Body,
    Endpoint,
    Item,
    ItemStream,
    RequestMeta,
    SearchQuery,
    StreamingServer,
)


class StreamClient:
    """A ``StreamingServer`` deployment, through its handle."""

    def __init__(self, handle: Any):
        self.deployment_name: str | None = handle.deployment_name
        self._respond = handle.options(stream=True).respond

    def stream(self, endpoint: Endpoint, body: Body, meta: RequestMeta) -> ItemStream:
        return self._respond.remote(endpoint, body, meta)


class LocalClient:
    """A ``StreamingServer`` in this process: the same surface, no Ray hop."""

    deployment_name: str | None = None

    def __init__(self, server: StreamingServer):
        self.server = server

    def stream(self, endpoint: Endpoint, body: Body, meta: RequestMeta) -> ItemStream:
        return LocalStream(self.server.respond(endpoint, body, meta))


Client = StreamClient | LocalClient


# Tasks closing abandoned generators. The event loop keeps only weak
# references to tasks, so without this a close could be garbage-collected
# before it runs, and the engine would keep generating for nobody.
_closing: set[asyncio.Task[None]] = set()


class LocalStream:
    """Async iterator over a local async generator; ``cancel()`` closes it,
    which (like a cancelled Serve stream) makes vLLM abort the request."""

    def __init__(self, gen: AsyncIterator[Item]):
        self._gen = gen

    def __aiter__(self) -> LocalStream:
        return self

    async def __anext__(self) -> Item:
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
        if isinstance(self._gen, AsyncGenerator):
            with contextlib.suppress(RuntimeError):
                await self._gen.aclose()


class SearchClient:
    """The retriever deployment (``protocol.Searcher``)."""

    def __init__(self, handle: Any):
        self.deployment_name: str | None = handle.deployment_name
        self._handle = handle

    async def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        return await self._handle.search.remote(query)


class EmbedClient:
    """The embedder deployment's batched ``embed`` (``protocol.Embedding``)."""

    def __init__(self, handle: Any):
        self._handle = handle

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._handle.embed.remote(texts)


class ScoreClient:
    """The reranker deployment's ``score`` (``protocol.Scoring``)."""

    def __init__(self, handle: Any):
        self._handle = handle

    async def score(self, body: Body) -> Answer:
        return await self._handle.score.remote(body)
