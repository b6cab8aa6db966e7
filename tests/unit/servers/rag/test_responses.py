"""A RAG pipeline's Responses shaper; its answers checked against the OpenAI SDK's own types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import (
    Response,
    ResponseFileSearchToolCall,
    ResponseOutputTextAnnotationAddedEvent,
    ResponseStreamEvent,
)
from pydantic import TypeAdapter

from llmserve.openai.errors import APIError
from llmserve.servers.rag import responses as rag_responses
from llmserve.servers.rag.citations import Citations
from llmserve.servers.rag.query import Question
from llmserve.servers.rag.shaper import Grounding

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
RAG: dict[str, Any] = {"pipeline": "rag", "timings_ms": {"retrieve": 1.0}}
EXTRA = {"rag": RAG, "sources": SOURCES}


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


def _event(kind: str, sequence_number: int, **fields: Any) -> str:
    payload = {"type": kind, "sequence_number": sequence_number, **fields}
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"


def _generator_stream() -> list[str]:
    """The events vLLM's Responses serving class writes for a one-message answer."""
    started = _response("in_progress", [])
    part = {"type": "output_text", "text": "", "annotations": []}
    text = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    kinds: list[tuple[str, dict[str, Any]]] = [
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


def _rewritten(item: dict[str, Any] | None) -> list[Any]:
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
    assert events[0].response.model_extra["rag"] == RAG


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
    assert isinstance(search, ResponseFileSearchToolCall) and search.results is not None
    assert search.queries == ["what is a?"]
    numbers = [(r.attributes or {}).get("source_number") for r in search.results]
    scored = [(r.filename, r.score) for r in search.results]
    assert scored == [("docs/a.md", 0.9), ("docs/b.md", 0.5)]
    assert numbers == [1, 2]
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
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": 3}, "input"),
        ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].type"),
        ({"input": ["hi", {"role": "user", "content": "q"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": "q"}, {"role": "tool"}]}, "input[1].role"),
        ({"input": [{"role": 5, "content": "q"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": [{"role": "user", "content": [5]}]}, "input[0].content[0]"),
        ({"input": [{"role": "user", "content": [{"text": "q"}]}]}, "input[0].content[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": 123}]}]},
            "input[0].content[0].text",
        ),
        ({"input": "hi", "instructions": ["no"]}, "instructions"),
    ],
)
def test_input_a_pipeline_cannot_read_is_400_naming_the_field(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(APIError) as err:
        rag_responses.input_messages(body)
    assert (err.value.status, err.value.param) == (400, param)
    assert param in err.value.message


SHAPER = rag_responses.ResponsesShaper()


def test_decode_takes_the_question_from_input_after_the_instructions() -> None:
    body = {"input": "what is a?", "instructions": "be brief"}
    assert SHAPER.decode(body) == Question(
        "what is a?", [{"role": "system", "content": "be brief"}]
    )


def test_the_generator_gets_the_prompt_as_input_and_no_instructions() -> None:
    body = {"model": "rag", "input": "q", "instructions": "be brief", "rag": {}, "stream": True}
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}]
    assert SHAPER.generate_body(body, "gen", prompt) == {
        "model": "gen",
        "input": prompt,
        "stream": True,
    }
    assert body["instructions"] == "be brief"  # the client's body is kept


def test_the_shaper_adds_the_search_unless_no_sources_were_asked_for() -> None:
    answer = _response("completed", [MESSAGE])
    grounded = SHAPER.encode_answer(answer, Grounding("what is a?", SOURCES, RAG))
    assert [o["type"] for o in grounded["output"]] == ["file_search_call", "message"]
    assert grounded["sources"] == SOURCES and grounded["rag"] == RAG
    silent = SHAPER.encode_answer(answer, Grounding("what is a?", None, RAG))
    assert silent == {**answer, "rag": RAG}


def test_a_streams_first_and_later_events_are_numbered_as_one_stream() -> None:
    encoder = SHAPER.encode_stream(Grounding("what is a?", SOURCES, RAG))
    first, *rest = _generator_stream()
    assert encoder.later is not None
    written = encoder.first(first) + [out for event in rest for out in encoder.later(event)]
    numbers = [json.loads(event.split("data: ", 1)[1])["sequence_number"] for event in written]
    assert numbers == list(range(len(_generator_stream()) + 2))


CITATIONS = Citations(SOURCES, "rag", "docs")


def _cited_stream(deltas: list[str]) -> list[Any]:
    """The generator's events for an answer written in ``deltas``, through the shaper."""
    text = "".join(deltas)
    message = {**MESSAGE, "content": [{"type": "output_text", "text": text, "annotations": []}]}
    started = _response("in_progress", [])
    part = {"type": "output_text", "text": "", "annotations": []}
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": started}),
        ("response.in_progress", {"response": started}),
        ("response.output_item.added", {"output_index": 0, "item": {**MESSAGE, "content": []}}),
        ("response.content_part.added", {**ids, "part": part}),
        *(("response.output_text.delta", {**ids, "delta": d, "logprobs": []}) for d in deltas),
        ("response.output_text.done", {**ids, "text": text, "logprobs": []}),
        ("response.content_part.done", {**ids, "part": {**part, "text": text}}),
        ("response.output_item.done", {"output_index": 0, "item": message}),
        ("response.completed", {"response": _response("completed", [message])}),
    ]
    item = rag_responses.file_search_item("q", SOURCES)
    encoder = SHAPER.encode_stream(Grounding("q", SOURCES, RAG, CITATIONS))
    first, *rest = [_event(kind, i, **fields) for i, (kind, fields) in enumerate(kinds)]
    assert encoder.later is not None and item["type"] == "file_search_call"
    written = encoder.first(first) + [out for event in rest for out in encoder.later(event)]
    events = TypeAdapter(ResponseStreamEvent)
    return [events.validate_python(json.loads(e.split("data: ", 1)[1])) for e in written]


def test_a_stream_announces_each_citation_after_the_delta_that_completes_it() -> None:
    deltas = ["Alpha [", "1] and beta [2", "]", ", not [3]."]
    events = _cited_stream(deltas)
    kinds = [e.type for e in events]
    added = [e for e in events if isinstance(e, ResponseOutputTextAnnotationAddedEvent)]
    # OpenAI's order: right after the delta that completes each marker, before the done events
    before = [events[events.index(e) - 1] for e in added]
    assert [(e.type, getattr(e, "delta", None)) for e in before] == [
        ("response.output_text.delta", "1] and beta [2"),
        ("response.output_text.delta", "]"),
    ]
    assert kinds.index("response.output_text.done") > events.index(added[-1])
    assert [e.annotation_index for e in added] == [0, 1]
    assert {(e.item_id, e.output_index, e.content_index) for e in added} == {("msg_1", 1, 0)}
    text = "".join(deltas)
    cited = [(a.annotation.file_id, text[a.annotation.index :][:3]) for a in added]
    assert cited == [("a#0", "[1]"), ("b#3", "[2]")]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    part = final.output[1].content[0]
    streamed = [a.annotation.model_dump() for a in added if a.annotation is not None]
    assert [a.model_dump() for a in part.annotations] == streamed
    done_part = next(e for e in events if e.type == "response.content_part.done").part
    assert [a.model_dump() for a in done_part.annotations] == streamed


def test_a_whole_response_annotates_its_output_text() -> None:
    message = {
        **MESSAGE,
        "content": [{"type": "output_text", "text": "Hi [2] [1]", "annotations": []}],
    }
    answer = SHAPER.encode_answer(
        _response("completed", [message]), Grounding("q", SOURCES, RAG, CITATIONS)
    )
    response = Response.model_validate(answer)
    [text] = response.output[1].content
    assert [(a.type, a.file_id, a.filename, a.index) for a in text.annotations] == [
        ("file_citation", "b#3", "docs/b.md", 3),
        ("file_citation", "a#0", "docs/a.md", 7),
    ]
