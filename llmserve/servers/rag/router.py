"""RAG router deployment: retrieval -> reranking -> generation, as a chat model.

A pipeline id is served like a model on ``/v1/chat/completions`` and
``/v1/responses``, and answers ``/v1/retrieve``. The answer path is the same
for both APIs: the API's shaper (``chat.py``, ``responses.py``, picked by
endpoint from ``SHAPERS``) decodes the question, the shared stages
(``retrieval.py``) retrieve, rerank and build the prompt with numbered
sources, the generator deployment answers through the same handle protocol
as the LLM server, and the shaper encodes that answer, whole or streamed,
with the sources and the stage timings.

Errors follow ``protocol.py``: anything refused before generation (a bad
request, a limit, an overloaded or missing stage) is one error body; retrying
an overloaded or unavailable stage is safe, as nothing was generated. The
generation stream is closed whenever this generator is, so a client that
leaves frees the engine.

The router runs as its own deployment, or inside the ingress when its
generator is the ingress's fused model (then ``generator`` is a local client).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from llmserve.observability import metrics
from llmserve.openai.errors import error_body, from_exception
from llmserve.servers.clients import Client, LocalClient, ScoreClient, SearchClient, StreamClient
from llmserve.servers.protocol import NO_META, Body, Endpoint, Item, RequestMeta
from llmserve.servers.rag.chat import ChatShaper
from llmserve.servers.rag.citations import Citations
from llmserve.servers.rag.followup import FollowUp
from llmserve.servers.rag.responses import ResponsesShaper
from llmserve.servers.rag.retrieval import Retrieval, Timings
from llmserve.servers.rag.shaper import Grounding, Shaper

if TYPE_CHECKING:
    from llmserve.config import PipelineConfig

logger = logging.getLogger("llmserve")

SHAPERS: Mapping[Endpoint, Shaper] = {
    Endpoint.CHAT: ChatShaper(),
    Endpoint.RESPONSES: ResponsesShaper(),
}
"""The APIs a pipeline answers, each with its shaper (``/v1/retrieve`` besides)."""


class RAGRouter:
    def __init__(
        self,
        pipeline: PipelineConfig,
        tokenizer_path: str,
        retriever: Any,
        reranker: Any | None,
        generator: Any,
        base_url: str | None = None,
    ) -> None:
        """``retriever``, ``reranker``: deployment handles; ``generator``: the generator's
        handle, or a ``LocalClient`` of the fused model when this router runs in the ingress.
        ``tokenizer_path``: the generator's tokenizer, which the prompt's budget counts in.
        ``base_url``: the retriever's ``corpus.base_url``, which citations link to."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)

        def count_tokens(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))

        self.cfg = pipeline
        self._retrieval = Retrieval(
            pipeline,
            SearchClient(retriever),
            ScoreClient(reranker) if reranker is not None else None,
            count_tokens,
        )
        self._generator: Client = (
            generator if isinstance(generator, LocalClient) else StreamClient(generator)
        )
        self._followup = FollowUp(pipeline, self._generator)
        self._base_url = base_url
        self._sampling = pipeline.sampling.defaults()

    async def respond(
        self, endpoint: Endpoint, body: Body, meta: RequestMeta = NO_META
    ) -> AsyncGenerator[Item, None]:
        """``protocol.StreamingServer``: chat and Responses answers with sources, and retrieval."""
        shaper = SHAPERS.get(endpoint)
        if shaper is not None:
            async for item in self._answer(endpoint, shaper, body, meta):
                yield item
        elif endpoint is Endpoint.RETRIEVE:
            yield await self._retrieval.retrieve(body)
        else:
            yield error_body(404, f"'{self.cfg.id}' does not serve {endpoint.path}")

    async def _answer(
        self, endpoint: Endpoint, shaper: Shaper, body: Body, meta: RequestMeta
    ) -> AsyncGenerator[Item, None]:
        timings = Timings(self.cfg.id)
        try:
            overrides = self._retrieval.overrides(body)
            question = shaper.decode(body)
            search = await self._followup.query(question, overrides.query_mode, meta, timings, body)
            hits = await self._retrieval.find(search.text, overrides, timings)
        except Exception as exc:
            yield from_exception(exc, self.cfg.id, logger).body()
            return
        prompt = self._retrieval.prompt(question, hits)
        generate = shaper.generate_body(body, self.cfg.generator, prompt.messages)
        for name, value in self._sampling.items():
            generate.setdefault(name, value)

        started = time.perf_counter()
        stream = self._generator.stream(endpoint, generate, meta)
        try:
            try:
                first = await stream.__anext__()
            except Exception as exc:
                yield from_exception(exc, self.cfg.generator, logger).body()
                return
            timings.observe("generate_first_token", started)
            grounding = Grounding(
                search.text,
                prompt.sources if overrides.return_sources else None,
                {"pipeline": self.cfg.id, "query": search.block(), "timings_ms": timings.ms},
                Citations(prompt.sources, self.cfg.id, self.cfg.retriever, self._base_url),
            )
            if isinstance(first, dict):
                yield first if "error" in first else shaper.encode_answer(first, grounding)
                return
            encoder = shaper.encode_stream(grounding)
            for event in encoder.first(first):
                yield event
            if encoder.later is None:  # the hot path: relay, no work per event
                async for item in stream:
                    yield item
                return
            rewrite = encoder.later
            async for item in stream:
                for event in rewrite(item):  # type: ignore[arg-type]  # a stream's items are SSE events
                    yield event
        finally:
            stream.cancel()

    async def metrics_text(self) -> metrics.ReplicaMetrics:
        return metrics.replica_exposition()
