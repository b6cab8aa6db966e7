"""Reranker deployment: vLLM's score API behind ``/v1/rerank``.

The Cohere/Jina schema vLLM serves: ``{model, query, documents, top_n,
return_documents}`` -> ``{id, model, results: [{index, relevance_score,
document?}], usage}``. With a cross-encoder model vLLM cross-encodes; with an
embedding model its score API returns cosine similarity.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from llmserve.engine.pooling import run_pooling
from llmserve.servers.pooling import PoolingServer


class Reranker(PoolingServer):
    async def __init__(self, cfg, home: str | None = None):
        await self._start(cfg, home)
        self.kind = cfg.kind
        self._serving = self._state.serving_scores
        if self._serving is None:
            raise ValueError(f"reranker '{cfg.id}': {cfg.source} has no score API in vLLM")

    async def rerank(self, body: dict[str, Any]) -> AsyncGenerator[dict, None]:
        yield await self.rerank_json(body)

    async def rerank_json(self, body: dict[str, Any]) -> dict[str, Any]:
        from vllm.entrypoints.pooling.scoring.protocol import RerankRequest

        body = dict(body)
        # vLLM always returns the documents; Cohere's schema makes it optional.
        return_documents = body.pop("return_documents", True)
        result = await run_pooling(self._serving, RerankRequest, body)
        if "error" not in result and not return_documents:
            for item in result["results"]:
                item.pop("document", None)
        return result
