"""Embedder deployment: a vLLM pooling engine behind ``/v1/embeddings``.

HTTP requests go straight to vLLM's ``ServingEmbedding`` (OpenAI schema:
string or list input, ``encoding_format`` float or base64, usage). The
retriever's handle path, ``embed``, is batched with ``@serve.batch``, so
concurrent queries share one engine call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray import serve

from llmserve.deployments.pooling import PoolingServer
from llmserve.engine.pooling import embed_texts, run_pooling


class Embedder(PoolingServer):
    async def __init__(self, cfg, home: str | None = None):
        await self._start(cfg, home)
        self._serving = self._state.serving_embedding
        if self._serving is None:
            raise ValueError(f"embedder '{cfg.id}': {cfg.source} is not an embedding model")
        self.embed.set_max_batch_size(cfg.max_batch_size)
        self.embed.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.engine_calls = 0

    async def embeddings(self, body: dict[str, Any]) -> AsyncGenerator[dict, None]:
        from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

        yield await run_pooling(self._serving, EmbeddingRequest, body)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, batches: list[list[str]]) -> list[list[list[float]]]:
        """Embed texts; concurrent calls are merged into one engine call."""
        texts = [text for batch in batches for text in batch]
        self.engine_calls += 1
        vectors = await embed_texts(self._serving, self.model_id, texts)
        out, start = [], 0
        for batch in batches:
            out.append(vectors[start : start + len(batch)])
            start += len(batch)
        return out

    async def stats(self) -> dict[str, int]:
        """Counters for tests and debugging: how many engine calls batching made."""
        return {"engine_calls": self.engine_calls}
