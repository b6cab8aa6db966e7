"""RAG router deployment: retrieval -> reranking -> generation, as a chat model.

A pipeline id is served like a model on ``/v1/chat/completions`` and
``/v1/responses``. The router takes the query from the last user message,
retrieves, reranks, builds a prompt with numbered sources within the token
budget, and streams the generator deployment's answer back through the same
handle protocol as the LLM server (see llm_server.py). For chat, only the
first SSE event is rewritten, to carry ``sources`` and the stage timings; the
rest pass through untouched. Responses events are rewritten as
responses.py (next to this module) describes.

A stage that is overloaded or down makes the whole request a 429 or 503
(retrying is safe: nothing was generated); the generation stream is closed
whenever this generator is, so a client that leaves frees the engine.

The router runs as its own deployment, or inside the ingress when its
generator is the ingress's fused model (then ``generator`` is a local handle).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from prometheus_client import Histogram
from pydantic import ValidationError

from llmserve.observability import metrics
from llmserve.openai import sse
from llmserve.openai.errors import APIError, error_body, from_exception, validation_error_body
from llmserve.openai.protocol import RagOverrides, RetrieveRequest, Source, chat_messages
from llmserve.rag import Hit, build_messages
from llmserve.servers.clients import LocalClient, ScoreClient, SearchClient, StreamClient
from llmserve.servers.protocol import (
    NO_META,
    PIPELINE_ENDPOINTS,
    Answer,
    Body,
    Endpoint,
    Item,
    RequestMeta,
    SearchQuery,
)
from llmserve.servers.rag import responses as rag_responses

logger = logging.getLogger("llmserve")

STAGE_SECONDS = Histogram(
    "llmserve_rag_stage_seconds",
    "Time spent in each RAG stage: retrieve, rerank, generate_first_token.",
    ["pipeline", "stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RAGRouter:
    def __init__(self, pipeline, tokenizer_path: str, retriever, reranker, generator):
        """``retriever``, ``reranker``: deployment handles; ``generator``: the generator's
        handle, or a ``LocalClient`` of the fused model when this router runs in the ingress."""
        from transformers import AutoTokenizer

        self.cfg = pipeline
        self._retriever = SearchClient(retriever)
        self._reranker = ScoreClient(reranker) if reranker is not None else None
        self._generator = (
            generator if isinstance(generator, LocalClient) else StreamClient(generator)
        )
        self._tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

    async def respond(
        self, endpoint: Endpoint, body: Body, meta: RequestMeta = NO_META
    ) -> AsyncGenerator[Item, None]:
        """``protocol.StreamingServer``: chat and Responses answers with sources, and retrieval."""
        if endpoint is Endpoint.RETRIEVE:
            yield await self._retrieve(body)
        elif endpoint in PIPELINE_ENDPOINTS:
            async for item in self._answer(endpoint, body, meta):
                yield item
        else:
            yield error_body(404, f"'{self.cfg.id}' does not serve {endpoint.path}")

    async def _answer(
        self, method: Endpoint, body: Body, meta: RequestMeta
    ) -> AsyncGenerator[Item, None]:
        timings: dict[str, float] = {}
        try:
            overrides = self._overrides(body)
            if method == "chat":
                query, history = _split_query(chat_messages(body), "messages")
            else:
                query, history = _split_query(rag_responses.input_messages(body), "input")
            hits = await self._retrieve_and_rerank(query, overrides, timings)
        except Exception as exc:
            yield from_exception(exc, self.cfg.id, logger).body()
            return
        messages, used = build_messages(
            query,
            hits,
            self.cfg.system_prompt,
            self.cfg.prompt_template,
            self.cfg.context_token_budget,
            self._count_tokens,
            history,
        )
        sources = [_source(i, hit) for i, hit in enumerate(used, start=1)]
        if method == "chat":
            generate_body = {k: v for k, v in body.items() if k != "rag"}
            generate_body.update(model=self.cfg.generator, messages=messages)
        else:  # the instructions are the first message now
            generate_body = {k: v for k, v in body.items() if k not in ("rag", "instructions")}
            generate_body.update(model=self.cfg.generator, input=messages)

        started = time.perf_counter()
        stream = self._generator.stream(method, generate_body, meta)
        try:
            try:
                first = await stream.__anext__()
            except Exception as exc:
                yield from_exception(exc, self.cfg.generator, logger).body()
                return
            self._observe(timings, "generate_first_token", started)
            extra = {"rag": {"pipeline": self.cfg.id, "timings_ms": timings}}
            if overrides.return_sources:
                extra["sources"] = sources
            item = rag_responses.file_search_item(query, sources) if "sources" in extra else None
            if isinstance(first, dict):
                if "error" in first:
                    yield first
                elif method == "chat":
                    yield {**first, **extra}
                else:
                    yield rag_responses.with_sources(first, item, extra)
                return
            if method == "chat":
                yield _with_extra(first, extra)
                async for event in stream:
                    yield event
                return
            rewrite = rag_responses.SourcesInStream(item, extra)
            for out in rewrite(first):
                yield out
            async for event in stream:
                for out in rewrite(event):
                    yield out
        finally:
            stream.cancel()

    async def _retrieve(self, body: Body) -> Answer:
        try:
            request = RetrieveRequest.model_validate(body)
        except ValidationError as exc:
            return validation_error_body(exc)
        try:
            query = _non_empty(request.query, "query")
            top_k = self._limit(request.top_k, self.cfg.top_k, self.cfg.max_top_k, "top_k")
            hits = await self._retriever.search(
                SearchQuery(query, top_k, request.mode, request.filters)
            )
        except Exception as exc:
            return from_exception(exc, self.cfg.id, logger).body()
        return {
            "object": "list",
            "pipeline": self.cfg.id,
            "data": [{"object": "retrieval.chunk", **hit} for hit in hits],
        }

    async def metrics_text(self) -> metrics.ReplicaMetrics:
        return metrics.replica_exposition()

    # --- stages ---

    def _overrides(self, body: dict[str, Any]) -> RagOverrides:
        try:
            return RagOverrides.model_validate(body.get("rag") or {})
        except ValidationError as exc:
            err = validation_error_body(exc)["error"]
            raise APIError(400, err["message"], param=f"rag.{err['param']}") from None

    async def _retrieve_and_rerank(
        self, query: str, overrides: RagOverrides, timings: dict[str, float]
    ) -> list[Hit]:
        top_k = self._limit(overrides.top_k, self.cfg.top_k, self.cfg.max_top_k, "rag.top_k")
        top_n = self._limit(overrides.top_n, self.cfg.top_n, self.cfg.max_top_n, "rag.top_n")
        started = time.perf_counter()
        found = await self._retriever.search(
            SearchQuery(query, top_k, overrides.mode, overrides.filters)
        )
        self._observe(timings, "retrieve", started)
        hits = [Hit(**hit) for hit in found]
        if self._reranker is None or not hits:
            return hits[:top_n]
        started = time.perf_counter()
        try:
            ranked = await self._reranker.score(
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
        self._observe(timings, "rerank", started)
        min_score = self.cfg.min_score
        return [
            _rescored(hits[r["index"]], r["relevance_score"])
            for r in ranked["results"]
            if min_score is None or r["relevance_score"] >= min_score
        ]

    def _count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _limit(self, requested: int | None, default: int, limit: int, param: str) -> int:
        value = default if requested is None else requested
        if value > limit:
            raise APIError(400, f"{param} must be <= {limit} for pipeline '{self.cfg.id}'", param)
        return value

    def _observe(self, timings: dict[str, float], stage: str, started: float) -> None:
        seconds = time.perf_counter() - started
        timings[stage] = round(seconds * 1000, 2)
        STAGE_SECONDS.labels(self.cfg.id, stage).observe(seconds)


def _split_query(messages: list, param: str) -> tuple[str, list]:
    """The last user message's text (the query) and the messages before it."""
    last_user = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
        default=None,
    )
    if last_user is None:
        raise APIError(400, "a RAG pipeline needs a user message", param=param)
    return _non_empty(_text_of(messages[last_user].get("content")), param), messages[:last_user]


def _text_of(content: Any) -> str:
    """The text of a message: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _non_empty(text: str, param: str) -> str:
    if not text.strip():
        raise APIError(400, "the query is empty", param=param)
    return text.strip()


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


def _with_extra(event: str, extra: dict[str, Any]) -> str:
    """Add fields to a ``data: {...}`` SSE event (done once per stream)."""
    payload = sse.parse_data(event)
    if payload is None:
        return event
    return sse.data_text({**payload, **extra})
