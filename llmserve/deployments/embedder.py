"""Embedder deployment: a vLLM pooling engine behind ``/v1/embeddings``.

HTTP requests go straight to vLLM's ``ServingEmbedding`` (OpenAI schema:
string or list input, ``encoding_format`` float or base64, usage; an input
longer than the model's context is vLLM's own 400). The retriever's handle
path, ``embed``, checks each text's length first (a too-long query is a 400
naming the limit, and never fails the other queries of its batch), then is
batched with ``@serve.batch``, so concurrent queries share one engine call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from ray import serve

from llmserve.deployments.pooling import PoolingServer
from llmserve.engine.pooling import embed_texts, run_pooling
from llmserve.openai.errors import APIError


class Embedder(PoolingServer):
    async def __init__(self, cfg, home: str | None = None):
        await self._start(cfg, home)
        self._serving = self._state.serving_embedding
        if self._serving is None:
            raise ValueError(f"embedder '{cfg.id}': {cfg.source} is not an embedding model")
        self._embed_batch.set_max_batch_size(cfg.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self._tokenizer = self._engine.get_tokenizer()
        self._max_tokens = self._engine.model_config.max_model_len
        self.engine_calls = 0

    async def embeddings(self, body: dict[str, Any]) -> AsyncGenerator[dict, None]:
        from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

        yield await run_pooling(self._serving, EmbeddingRequest, body)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed texts; concurrent calls are merged into one engine call.

        Raises a 400 ``APIError`` naming the limit for a text longer than the
        model's context, before it joins a batch.
        """
        for text in texts:
            tokens = len(self._tokenizer.encode(text))
            if tokens > self._max_tokens:
                raise APIError(
                    400,
                    f"the query is {tokens} tokens; embedder '{self.model_id}' takes at most "
                    f"{self._max_tokens}",
                    param="query",
                )
        return await self._embed_batch(texts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _embed_batch(self, batches: list[list[str]]) -> list[list[list[float]]]:
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
