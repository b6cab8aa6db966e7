"""A RAG pipeline's Responses answer, checked against the OpenAI SDK's own types."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from llmserve.openai.errors import APIError
from llmserve.servers.rag import responses as rag_responses

SOURCES = [
    {
        "id": 1,
        "source": "docs/a.md",
        "title": "A",
        "chunk_id": "a#0",
        "text": "alpha",
        "score": 0.9,
    },
    {"id": 2, "source": "docs/b.md", "title": "B", "chunk_id": "b#3", "text": "beta", "score": 0.5},
]
EXTRA = {"rag": {"pipeline": "rag", "timings_ms": {"retrieve": 1.0}}, "sources": SOURCES}


def _response(status: str, output: list) -> dict:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 0,
        "model": "gen",
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Hi [1]", "annotations": []}],
}


def _event(kind: str, sequence_number: int, **fields) -> str:
    payload = {"type": kind, "sequence_number": sequence_number, **fields}
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"


def _generator_stream() -> list[str]:
    """The events vLLM's Responses serving class writes for a one-message answer."""
    started = _response("in_progress", [])
    part = {"type": "output_text", "text": "", "annotations": []}
    text = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    kinds = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": {**MESSAGE, "content": []}}),
        ("response.content_part.added", {**text, "part": part}),
        ("response.output_text.delta", {**text, "delta": "Hi", "logprobs": []}),
        ("response.output_text.delta", {**text, "delta": " [1]", "logprobs": []}),
        ("response.output_text.done", {**text, "text": "Hi [1]", "logprobs": []}),
        ("response.content_part.done", {**text, "part": {**part, "text": "Hi [1]"}}),
        ("response.output_item.done", {"output_index": 0, "item": MESSAGE}),
        ("response.completed", {"response": _response("completed", [MESSAGE])}),
    ]
    return [_event(kind, i, **fields) for i, (kind, fields) in enumerate(kinds)]


def _rewritten(item) -> list:
    rewrite = rag_responses.SourcesInStream(item, EXTRA)
    written = [out for event in _generator_stream() for out in rewrite(event)]
    events = TypeAdapter(ResponseStreamEvent)
    parsed = []
    for sse in written:
        kind_line, data_line = sse.strip().split("\n")
        event = events.validate_python(json.loads(data_line.removeprefix("data: ")))
        assert kind_line == f"event: {event.type}"
        parsed.append(event)
    return parsed


def test_a_streamed_answer_announces_the_search_first_and_stays_consistent() -> None:
    item = rag_responses.file_search_item("what is a?", SOURCES)
    events = _rewritten(item)
    assert [e.type for e in events[:4]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
    ]
    assert events[2].item.results[1].file_id == "b#3"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # The message moved from output 0 to output 1 in every event that names it.
    assert {e.output_index for e in events[4:] if hasattr(e, "output_index")} == {1}
    final = events[-1].response
    assert [o.type for o in final.output] == ["file_search_call", "message"]
    assert final.output_text == "Hi [1]"
    assert final.model_extra["sources"] == SOURCES
    assert events[0].response.model_extra["rag"] == EXTRA["rag"]


def test_without_sources_only_the_extra_fields_are_added() -> None:
    events = _rewritten(None)
    assert len(events) == len(_generator_stream())
    assert {e.output_index for e in events if hasattr(e, "output_index")} == {0}
    assert [o.type for o in events[-1].response.output] == ["message"]


def test_a_whole_answer_puts_the_search_before_the_message() -> None:
    item = rag_responses.file_search_item("what is a?", SOURCES)
    answer = rag_responses.with_sources(_response("completed", [MESSAGE]), item, EXTRA)
    response = Response.model_validate(answer)
    search, message = response.output
    assert search.queries == ["what is a?"]
    assert [(r.filename, r.score, r.attributes["source_number"]) for r in search.results] == [
        ("docs/a.md", 0.9, 1),
        ("docs/b.md", 0.5, 2),
    ]
    assert message.id == "msg_1"


def test_instructions_and_input_become_chat_messages() -> None:
    assert rag_responses.input_messages({"input": "hi", "instructions": "be brief"}) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    parts = [{"type": "input_text", "text": "hello"}]
    assert rag_responses.input_messages(
        {"input": [{"type": "message", "role": "user", "content": parts}]}
    ) == [{"role": "user", "content": parts}]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"input": 3},
        {"input": [{"type": "function_call_output", "call_id": "c", "output": "{}"}]},
        {"input": [{"role": "tool", "content": "x"}]},
        {"input": "hi", "instructions": ["no"]},
    ],
)
def test_input_a_pipeline_cannot_search_is_400(body) -> None:
    with pytest.raises(APIError) as err:
        rag_responses.input_messages(body)
    assert err.value.status == 400
    assert err.value.param in ("input", "instructions")
