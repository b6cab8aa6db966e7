"""An eval question asked through the real OpenAI SDK, over a mock HTTP transport
that streams what a pipeline streams: sources first, annotations on the finish chunk."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from llmserve.cli.evaluation.client import Settings, ask
from llmserve.cli.evaluation.questions import EvalItem

pytestmark = pytest.mark.unit

SOURCES = [{"id": 1, "source": "docs/cpu.md", "text": "VLLM_CPU_KVCACHE_SPACE"}]
CITATION = {
    "type": "url_citation",
    "url_citation": {"start_index": 6, "end_index": 9, "title": "CPU", "url": "llmserve://d"},
}


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "rag"}
    return "data: " + json.dumps({**body, "choices": [choice], **extra}) + "\n\n"


def _client(handler: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://llmserve.test/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )


def test_a_streamed_reply_brings_its_text_sources_query_and_annotations() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        query = {"mode": "history", "text": "x\ny"}
        events = [
            _chunk({"role": "assistant", "content": ""}, sources=SOURCES, rag={"query": query}),
            _chunk({"content": "It is ["}),
            _chunk({"content": "1]."}),
            _chunk({"annotations": [CITATION]}, finish="stop"),
            "data: [DONE]\n\n",
        ]
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, content="".join(events).encode(), headers=headers)

    item = EvalItem(history=[{"role": "user", "content": "x"}], question="y")  # type: ignore[list-item]
    reply = ask(_client(handler), Settings("rag", 16, 0.0), item, "bm25", "history")
    assert reply.error is None and reply.text == "It is [1]."
    assert reply.sources == SOURCES and reply.query == {"mode": "history", "text": "x\ny"}
    [annotation] = reply.annotations
    assert (
        reply.text[annotation.url_citation.start_index : annotation.url_citation.end_index] == "[1]"
    )
    assert reply.ttft_s is not None and reply.total_s >= reply.ttft_s
    [body] = sent
    assert body["rag"] == {"mode": "bm25", "query_mode": "history"} and body["stream"] is True
    assert body["messages"][-1] == {"role": "user", "content": "y"}


def test_an_api_error_is_the_replys_and_a_missing_pipeline_is_raised() -> None:
    def busy(request: httpx.Request) -> httpx.Response:
        error = {"message": "busy", "type": "requests", "code": "rate_limit_exceeded"}
        return httpx.Response(429, json={"error": error})

    item = EvalItem(question="q")
    reply = ask(_client(busy), Settings("rag", 16, 0.0), item, "default", None)
    assert reply.error == "RateLimitError: Error code: 429 - busy" and reply.text == ""

    def missing(request: httpx.Request) -> httpx.Response:
        error = {"message": "Could not find model 'rag'", "type": "not_found_error", "code": 404}
        return httpx.Response(404, json={"error": error})

    with pytest.raises(openai.NotFoundError):
        ask(_client(missing), Settings("rag", 16, 0.0), item, "default", None)
