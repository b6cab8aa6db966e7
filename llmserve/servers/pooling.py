"""Shared plumbing for deployments that own a vLLM pooling engine
(``runner="pooling"``): the embedder and the reranker."""

from __future__ import annotations

from pathlib import Path

from llmserve.engine.pooling import record_requests
from llmserve.engine.serving import start_engine
from llmserve.observability import metrics


class PoolingServer:
    async def _start(self, cfg, home: str | None) -> None:
        self.model_id = cfg.id
        bundle = await start_engine(cfg, Path(home) if home else None, runner="pooling")
        self._engine = bundle.engine
        self._state = bundle.serving
        for serving in (self._state.embedding, self._state.scores):
            if serving is not None:  # a client that leaves aborts its requests at once
                record_requests(serving)

    async def metrics_text(self) -> metrics.ReplicaMetrics:
        return metrics.replica_exposition()

    async def check_health(self) -> None:
        await self._engine.check_health()
