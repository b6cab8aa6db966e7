"""Retriever deployment: hybrid (dense + BM25, RRF) search over a LanceDB index.

Replicas open the same on-disk table read-only and see a re-index within
about a second (LanceDB's read consistency interval). Query vectors come
from the embedder deployment's batched ``embed`` handle method.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from llmserve.openai.errors import APIError
from llmserve.rag import ChunkStore, IndexNotBuilt, InvalidFilter, UnknownFilterField
from llmserve.servers.clients import EmbedClient
from llmserve.servers.protocol import SearchQuery

logger = logging.getLogger("llmserve")


class Retriever:
    def __init__(self, cfg, embedder, not_built_hint: str):
        """``embedder``: the embedder deployment's handle."""
        self.id = cfg.id
        self.default_mode = cfg.default_mode
        self.max_top_k = cfg.max_top_k
        self._embedder = EmbedClient(embedder)
        self._not_built = f"the index of retriever '{cfg.id}' is not built. {not_built_hint}"
        self.store = ChunkStore(
            cfg.uri,
            cfg.table,
            metadata_fields=cfg.corpus.metadata_fields,
            not_built_hint=not_built_hint,
        )

    async def search(self, search: SearchQuery) -> list[dict[str, Any]]:
        """``protocol.Searcher``: hits as plain dicts; raises ``APIError``."""
        query, top_k, filters = search.text, search.top_k, search.filters
        mode = search.mode or self.default_mode
        if top_k > self.max_top_k:
            raise APIError(400, f"top_k must be <= {self.max_top_k}", param="top_k")
        vector = None
        if mode != "bm25" and query.strip():
            try:
                vector = (await self._embedder.embed([query]))[0]
            except APIError as exc:  # a fresh one: errors wrapped twice lose their type
                raise APIError(exc.status, exc.message, param="query") from None
        try:
            hits = await self.store.asearch(query, vector, mode, top_k, filters)
        except UnknownFilterField as exc:
            raise APIError(400, str(exc), param="filters") from None
        except InvalidFilter as exc:
            raise APIError(400, str(exc), param="filters") from None
        except IndexNotBuilt:
            # The log has where it looked; the client gets what to do.
            logger.warning("retriever %s: index not built", self.id, exc_info=True)
            raise APIError(400, self._not_built, param="model") from None
        return [asdict(hit) for hit in hits]
