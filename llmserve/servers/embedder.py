"""Embedder deployment: a vLLM pooling engine behind ``/v1/embeddings``.

HTTP requests (``respond``) go straight to vLLM's ``ServingEmbedding`` (OpenAI schema:
string or list input, ``encoding_format`` float or base64, usage; an input
longer than the model's context is vLLM's own 400). The retriever's handle
path, ``embed``, is batched with ``@serve.batch``, so concurrent queries share
one engine call; an input vLLM refuses (e.g. longer than the context) fails
only its own call, with vLLM's 400 naming the limit.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from ray import serve

from llmserve.engine.pooling import embed_texts, run_pooling
from llmserve.openai.errors import APIError, error_body
from llmserve.servers.pooling import PoolingServer
from llmserve.servers.protocol import (
    EMBEDDING_ENDPOINTS,
    NO_META,
    Body,
    Endpoint,
    Item,
    RequestMeta,
)


class Embedder(PoolingServer):
    async def __init__(self, cfg, home: str | None = None):  # type: ignore[misc]  # Serve awaits it
        await self._start(cfg, home)
        self._serving = self._state.embedding
        if self._serving is None:
            raise ValueError(f"embedder '{cfg.id}': {cfg.source} is not an embedding model")
        self._embed_batch.set_max_batch_size(cfg.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.engine_calls = 0

    async def respond(
        self, endpoint: Endpoint, body: Body, meta: RequestMeta = NO_META
    ) -> AsyncGenerator[Item, None]:
        """``protocol.StreamingServer``: ``/v1/embeddings`` by vLLM's ``ServingEmbedding``."""
        from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

        if endpoint not in EMBEDDING_ENDPOINTS:
            yield error_body(404, f"'{self.model_id}' does not serve {endpoint.path}")
            return
        yield await run_pooling(self._serving, EmbeddingRequest, body)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed texts; concurrent calls are merged into one engine call.

        Raises ``APIError`` (400, vLLM's message) when vLLM refuses one of them.
        """
        result = await self._embed_batch(texts)
        if isinstance(result, APIError):
            raise result
        return result

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed_batch(self, calls: list[list[str]]) -> list[list[list[float]] | APIError]:
        self.engine_calls += 1
        try:
            vectors = await embed_texts(
                self._serving, self.model_id, [text for texts in calls for text in texts]
            )
        except APIError as exc:
            if len(calls) == 1 or exc.status >= 500:
                return [exc] * len(calls)
            # One bad input fails a whole engine call: redo each call on its
            # own, so only the one that sent it gets the error.
            return [await self._embed_alone(texts) for texts in calls]
        out: list[list[list[float]] | APIError] = []
        start = 0
        for texts in calls:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out

    async def _embed_alone(self, texts: list[str]) -> list[list[float]] | APIError:
        self.engine_calls += 1
        try:
            return await embed_texts(self._serving, self.model_id, texts)
        except APIError as exc:
            return exc

    async def stats(self) -> dict[str, int]:
        """Counters for tests and debugging: how many engine calls batching made."""
        return {"engine_calls": self.engine_calls}
