"""The three ways a pipeline builds its search query from a conversation, and the
rewrite's budget: its token cap, its timeout and its fallback to ``history``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmserve.config import PipelineConfig
from llmserve.openai.errors import error_body
from llmserve.servers.clients import LocalClient
from llmserve.servers.protocol import NO_META, Body, Endpoint, RequestMeta
from llmserve.servers.rag.followup import REWRITE_SYSTEM, FollowUp, standalone
from llmserve.servers.rag.query import Question
from llmserve.servers.rag.retrieval import Timings

pytestmark = pytest.mark.unit

HISTORY = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "What is the reranker?"},
    {"role": "assistant", "content": "It rescores chunks [1]."},
    {"role": "user", "content": [{"type": "text", "text": "Which model does it use?"}]},
    {"role": "assistant", "content": "MiniLM."},
]
QUESTION = Question("How fast is it?", HISTORY)


def _answer(content: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


class Rewriter:
    """``protocol.StreamingServer``: answers after ``delay`` seconds with ``answer``."""

    def __init__(self, answer: Any, delay: float = 0.0, fail: Exception | None = None):
        self.answer, self.delay, self.fail = answer, delay, fail
        self.bodies: list[Body] = []
        self.metas: list[RequestMeta] = []
        self.closed = 0

    async def respond(self, endpoint: Endpoint, body: Body, meta: RequestMeta) -> Any:
        assert endpoint is Endpoint.CHAT
        self.bodies.append(body)
        self.metas.append(meta)
        try:
            await asyncio.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            yield self.answer
        except (GeneratorExit, asyncio.CancelledError):
            self.closed += 1
            raise


def _followup(server: Rewriter, **fields: Any) -> FollowUp:
    cfg = PipelineConfig(id="docs", retriever="r", generator="gen", **fields)
    return FollowUp(cfg, LocalClient(server))  # type: ignore[arg-type]


async def _query(
    followup: FollowUp,
    question: Question = QUESTION,
    mode: Any = None,
    meta: RequestMeta = NO_META,
    body: Body | None = None,
) -> Any:
    timings = Timings("docs")
    search = await followup.query(question, mode, meta, timings, body)
    return search, timings.ms


async def test_last_searches_the_question_alone() -> None:
    server = Rewriter(_answer("unused"))
    search, timings = await _query(_followup(server, query_mode="last"))
    assert search.block() == {"mode": "last", "text": "How fast is it?"}
    assert server.bodies == [] and timings == {}


async def test_history_folds_in_the_recent_user_turns_without_a_model_call() -> None:
    server = Rewriter(_answer("unused"))
    search, _ = await _query(_followup(server))  # the default
    assert search.text == "What is the reranker?\nWhich model does it use?\nHow fast is it?"
    one, _ = await _query(_followup(server, query_mode="history", query_history_turns=1))
    assert one.text == "Which model does it use?\nHow fast is it?"
    assert server.bodies == []


async def test_rewrite_asks_the_generator_within_its_budget() -> None:
    server = Rewriter(_answer('"How fast is the MiniLM reranker?"\nExtra words.'))
    followup = _followup(server, query_mode="rewrite", rewrite_max_tokens=20)
    search, timings = await _query(followup)
    assert search.block() == {"mode": "rewrite", "text": "How fast is the MiniLM reranker?"}
    [body] = server.bodies
    assert body["model"] == "gen" and body["max_tokens"] == 20 and body["temperature"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": REWRITE_SYSTEM}
    assert "Assistant: It rescores chunks [1]." in user["content"]
    assert "Last question: How fast is it?" in user["content"]
    assert "be brief" not in user["content"]
    assert "rewrite" in timings


async def test_the_request_chooses_the_mode_and_rewrite_names_its_model() -> None:
    server = Rewriter(_answer("standalone"))
    followup = _followup(server, rewrite_model="gen-rewriter")
    meta = RequestMeta({"x-request-id": "r1", "traceparent": "t"})
    search, _ = await _query(followup, mode="rewrite", meta=meta)
    assert search.text == "standalone" and server.bodies[0]["model"] == "gen-rewriter"
    # its own request id: vLLM keys requests by it, and the answer's request comes next
    assert server.metas == [RequestMeta({"x-request-id": "r1-rewrite", "traceparent": "t"})]


async def test_a_tenants_rewrite_keeps_its_cache_salt_priority_and_meta() -> None:
    # The rewrite prompt holds the tenant's conversation: it must not share prefix cache
    # with other tenants, and it runs at the tenant's priority.
    server = Rewriter(_answer("standalone"))
    meta = RequestMeta({"x-request-id": "r1"}, tenant="team-a", priority="high")
    client = {"cache_salt": "s" * 64, "priority": -10, "top_p": 0.5, "seed": 3}
    await _query(_followup(server), mode="rewrite", meta=meta, body=client)
    [body] = server.bodies
    assert (body["cache_salt"], body["priority"]) == ("s" * 64, -10)
    assert "top_p" not in body and "seed" not in body  # the client's sampling is its answer's
    assert server.metas == [
        RequestMeta({"x-request-id": "r1-rewrite"}, tenant="team-a", priority="high")
    ]


async def test_rewrite_is_skipped_without_history() -> None:
    server = Rewriter(_answer("unused"))
    search, _ = await _query(_followup(server, query_mode="rewrite"), Question("Hi?", []))
    assert search.block() == {"mode": "rewrite", "text": "Hi?"}
    assert server.bodies == []


@pytest.mark.parametrize(
    ("server", "why"),
    [
        (Rewriter(_answer("late"), delay=5), "timeout"),
        (Rewriter(None, fail=RuntimeError("engine died")), "error"),
        (Rewriter(error_body(503, "'gen' is unavailable")), "error"),
        (Rewriter(_answer("  \n ")), "empty"),
        (Rewriter(_answer(None)), "empty"),
    ],
)
async def test_a_failed_rewrite_falls_back_to_history_and_says_why(
    server: Rewriter, why: str
) -> None:
    followup = _followup(server, query_mode="rewrite", rewrite_timeout_s=0.05)
    search, _ = await _query(followup)
    assert search.block() == {
        "mode": "history",
        "text": "What is the reranker?\nWhich model does it use?\nHow fast is it?",
        "fallback": why,
    }
    for _ in range(10):  # the close runs in a task
        await asyncio.sleep(0)
    if why == "timeout":
        assert server.closed == 1  # a late rewrite frees its engine work


def test_standalone_takes_the_first_line_without_a_label_or_quotes() -> None:
    assert standalone(_answer("Standalone question: 'What is X?'\nmore")) == "What is X?"
    assert standalone({"choices": []}) == ""
