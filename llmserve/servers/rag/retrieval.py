"""A pipeline's shared stages, whatever API asked: retrieve -> rerank -> prompt.

This is the "predict" half of the router (LitServe's decode / predict / encode
split): the API shapers (``chat.py``, ``responses.py``) turn a request into a
``Question`` and an answer back into their API's shape, and everything in
between is here, once: the request's ``rag`` overrides and their limits, the
retriever and the optional reranker (with ``min_score``), the prompt within the
token budget with its numbered sources, and the stage timings that go both
into the answer's ``rag`` block and into ``STAGE_SECONDS``. ``/v1/retrieve``,
which searches without generating, shares the retriever and the limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram
from pydantic import ValidationError

from llmserve.openai.errors import (
    APIError,
    from_exception,
    over_limit,
    validation_error_body,
)
from llmserve.openai.protocol import RagOverrides, RetrieveRequest, Source
from llmserve.rag import Hit, build_messages
from llmserve.servers.protocol import Answer, Body, Scoring, Searcher, SearchQuery
from llmserve.servers.rag.query import Question, non_empty

if TYPE_CHECKING:
    from llmserve.config import PipelineConfig

logger = logging.getLogger("llmserve")

STAGE_SECONDS = Histogram(
    "llmserve_rag_stage_seconds",
    "Time spent in each RAG stage: rewrite, retrieve, rerank, generate_first_token.",
    ["pipeline", "stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class Timings:
    """One request's stage timings: its answer's ``rag.timings_ms``, and ``STAGE_SECONDS``."""

    def __init__(self, pipeline: str) -> None:
        self.pipeline = pipeline
        self.ms: dict[str, float] = {}

    def observe(self, stage: str, started: float) -> None:
        """Record ``stage`` as having run from ``started`` (``time.perf_counter()``) until now."""
        seconds = time.perf_counter() - started
        self.ms[stage] = round(seconds * 1000, 2)
        STAGE_SECONDS.labels(self.pipeline, stage).observe(seconds)


@dataclass(frozen=True, slots=True)
class Prompt:
    """The generator's messages, and the numbered sources their context cites."""

    messages: list[dict[str, Any]]
    sources: list[dict[str, Any]]


class Retrieval:
    """The stages of one pipeline, over its retriever and (optional) reranker."""

    def __init__(
        self,
        cfg: PipelineConfig,
        searcher: Searcher,
        scorer: Scoring | None,
        count_tokens: Callable[[str], int],
    ) -> None:
        """``count_tokens`` counts in the generator's tokens: the budget is of its prompt."""
        self.cfg = cfg
        self._searcher = searcher
        self._scorer = scorer
        self._count_tokens = count_tokens

    def overrides(self, body: Body) -> RagOverrides:
        """The request's ``rag`` block; a 400 naming ``rag.<field>`` when it is wrong."""
        try:
            return RagOverrides.model_validate(body.get("rag") or {})
        except ValidationError as exc:
            err = validation_error_body(exc)["error"]
            raise APIError(400, err["message"], param=f"rag.{err['param']}") from None

    async def find(self, query: str, overrides: RagOverrides, timings: Timings) -> list[Hit]:
        """The hits for the prompt: retrieved, then reranked and cut to ``top_n``.

        Raises ``APIError`` (a limit, the retriever's own errors, a reranker failure)
        or a handle's exception (overload, no replica).
        """
        top_k = self._limit(overrides.top_k, self.cfg.top_k, self.cfg.max_top_k, "rag.top_k")
        top_n = self._limit(overrides.top_n, self.cfg.top_n, self.cfg.max_top_n, "rag.top_n")
        started = time.perf_counter()
        found = await self._searcher.search(
            SearchQuery(query, top_k, overrides.mode, overrides.filters)
        )
        timings.observe("retrieve", started)
        hits = [Hit(**hit) for hit in found]
        if self._scorer is None or not hits:
            return hits[:top_n]
        started = time.perf_counter()
        ranked = await self._rerank(self._scorer, query, hits, top_n)
        timings.observe("rerank", started)
        min_score = self.cfg.min_score
        return [
            _rescored(hits[r["index"]], r["relevance_score"])
            for r in ranked["results"]
            if min_score is None or r["relevance_score"] >= min_score
        ]

    async def _rerank(self, scorer: Scoring, query: str, hits: list[Hit], top_n: int) -> Answer:
        try:
            return await scorer.score(
                {
                    "model": self.cfg.reranker,
                    "query": query,
                    "documents": [h.text for h in hits],
                    "top_n": top_n,
                    "return_documents": False,
                }
            )
        except APIError as exc:
            # The reranker's message may carry model internals: log it, not send it.
            logger.error("pipeline %s: reranking failed: %s", self.cfg.id, exc.body()["error"])
            raise APIError(500, f"reranking failed in pipeline '{self.cfg.id}'") from None

    def prompt(self, question: Question, hits: list[Hit]) -> Prompt:
        """The generator's messages (system, history, the question with its context)
        and the sources numbered as the context cites them."""
        messages, used = build_messages(
            question.text,
            hits,
            self.cfg.system_prompt,
            self.cfg.prompt_template,
            self.cfg.context_token_budget,
            self._count_tokens,
            question.history,
            self.cfg.context_order == "best_last",
        )
        return Prompt(messages, [_source(i, hit) for i, hit in enumerate(used, start=1)])

    async def retrieve(self, body: Body) -> Answer:
        """``/v1/retrieve``: the retriever's hits for a query, or an error body."""
        try:
            request = RetrieveRequest.model_validate(body)
        except ValidationError as exc:
            return validation_error_body(exc)
        try:
            query = non_empty(request.query, "query")
            top_k = self._limit(request.top_k, self.cfg.top_k, self.cfg.max_top_k, "top_k")
            hits = await self._searcher.search(
                SearchQuery(query, top_k, request.mode, request.filters)
            )
        except Exception as exc:
            return from_exception(exc, self.cfg.id, logger).body()
        return {
            "object": "list",
            "pipeline": self.cfg.id,
            "data": [{"object": "retrieval.chunk", **hit} for hit in hits],
        }

    def _limit(self, requested: int | None, default: int, limit: int, param: str) -> int:
        # The ingress checks these caps before the request queues (ingress/caps.py);
        # this is the same check for a router called some other way.
        value = default if requested is None else requested
        if value > limit:
            raise over_limit(param, value, limit, self.cfg.id)
        return value


def _rescored(hit: Hit, score: float) -> Hit:
    return Hit(hit.chunk_id, hit.source, hit.title, hit.text, float(score), hit.metadata)


def _source(number: int, hit: Hit) -> dict[str, Any]:
    return Source(
        id=number,
        source=hit.source,
        title=hit.title,
        chunk_id=hit.chunk_id,
        text=hit.text,
        score=hit.score,
    ).model_dump()
