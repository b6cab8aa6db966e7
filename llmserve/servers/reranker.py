"""Reranker deployment: vLLM's score API behind ``/v1/rerank``.

The Cohere/Jina schema vLLM serves: ``{model, query, documents, top_n,
return_documents}`` -> ``{id, model, results: [{index, relevance_score,
document?}], usage}``. With a cross-encoder model vLLM cross-encodes; with an
embedding model its score API returns cosine similarity.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from llmserve.engine.pooling import run_pooling
from llmserve.openai.errors import APIError, error_body, status_of
from llmserve.servers.pooling import PoolingServer
from llmserve.servers.protocol import (
    NO_META,
    RERANK_ENDPOINTS,
    Answer,
    Body,
    Endpoint,
    Item,
    RequestMeta,
)


class Reranker(PoolingServer):
    async def __init__(self, cfg, home: str | None = None):  # type: ignore[misc]  # Serve awaits it
        await self._start(cfg, home)
        self.kind = cfg.kind
        self._serving = self._state.scores
        if self._serving is None:
            raise ValueError(f"reranker '{cfg.id}': {cfg.source} has no score API in vLLM")

    async def respond(
        self, endpoint: Endpoint, body: Body, meta: RequestMeta = NO_META
    ) -> AsyncGenerator[Item, None]:
        """``protocol.StreamingServer``: ``/v1/rerank``."""
        if endpoint not in RERANK_ENDPOINTS:
            yield error_body(404, f"'{self.model_id}' does not serve {endpoint.path}")
            return
        yield await self._rerank(body)

    async def score(self, body: Body) -> Answer:
        """``protocol.Scoring`` (RAG routers): the same answer; raises ``APIError``."""
        result = await self._rerank(body)
        if "error" in result:
            error = result["error"]
            raise APIError(status_of(result), error.get("message", ""), error.get("param"))
        return result

    async def _rerank(self, body: Body) -> Answer:
        from vllm.entrypoints.pooling.scoring.protocol import RerankRequest

        body = dict(body)
        # vLLM always returns the documents; Cohere's schema makes it optional.
        return_documents = body.pop("return_documents", True)
        result = await run_pooling(self._serving, RerankRequest, body)
        if "error" not in result and not return_documents:
            for item in result["results"]:
                item.pop("document", None)
        return result
