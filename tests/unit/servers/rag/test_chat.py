"""A pipeline's chat shaper: the question from ``messages``, the generator's request,
and the sources on a whole answer or on a stream's first event only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmserve.openai.errors import APIError
from llmserve.servers.rag.chat import ChatShaper
from llmserve.servers.rag.citations import Citations
from llmserve.servers.rag.query import Question
from llmserve.servers.rag.shaper import Grounding

pytestmark = pytest.mark.unit

SOURCES = [
    {"id": 1, "source": "a.md", "title": "A", "chunk_id": "a#0", "text": "alpha", "score": 0.9}
]
RAG = {"pipeline": "docs", "timings_ms": {"retrieve": 1.5}}
GROUNDED = Grounding("what is a?", SOURCES, RAG)
SILENT = Grounding("what is a?", None, RAG)


def test_decode_takes_the_question_from_messages() -> None:
    history = [{"role": "system", "content": "be brief"}]
    body = {"messages": [*history, {"role": "user", "content": "what is a?"}]}
    assert ChatShaper().decode(body) == Question("what is a?", history)


@pytest.mark.parametrize("body", [{}, {"messages": "what is a?"}])
def test_decode_refuses_messages_that_are_not_a_list(body: dict[str, Any]) -> None:
    with pytest.raises(APIError) as err:
        ChatShaper().decode(body)
    assert (err.value.status, err.value.param) == (400, "messages")


def test_the_generator_gets_the_prompt_in_place_of_the_conversation() -> None:
    body = {"model": "docs", "messages": ["old"], "rag": {"top_k": 2}, "stream": True}
    prompt = [{"role": "user", "content": "context and question"}]
    sent = ChatShaper().generate_body(body, "gen", prompt)
    assert sent == {"model": "gen", "messages": prompt, "stream": True}
    assert body["rag"] == {"top_k": 2} and body["model"] == "docs"  # the client's body is kept


def test_a_whole_answer_gets_rag_and_sources() -> None:
    answer = {"id": "c1", "choices": []}
    assert ChatShaper().encode_answer(answer, GROUNDED) == {
        **answer,
        "rag": RAG,
        "sources": SOURCES,
    }
    assert ChatShaper().encode_answer(answer, SILENT) == {**answer, "rag": RAG}


def test_only_the_first_event_of_a_stream_is_rewritten() -> None:
    encoder = ChatShaper().encode_stream(GROUNDED)
    assert encoder.later is None  # later events are relayed as they come
    [first] = encoder.first('data: {"id":"c1","choices":[]}\n\n')
    assert first.startswith("data: ") and first.endswith("\n\n")
    payload = json.loads(first.removeprefix("data: "))
    assert payload == {"id": "c1", "choices": [], "rag": RAG, "sources": SOURCES}
    assert encoder.first("data: [DONE]\n\n") == ["data: [DONE]\n\n"]


# Streams as vLLM writes them, with vLLM's own protocol classes.
def _vllm_chunk(content: str | None, finish: str | None = None, role: bool = False) -> str:
    from vllm.entrypoints.generate.base.protocol import DeltaMessage
    from vllm.entrypoints.openai.chat_completion.protocol import (
        ChatCompletionResponseStreamChoice,
        ChatCompletionStreamResponse,
    )

    delta = DeltaMessage(role="assistant", content=content) if role else DeltaMessage()
    if not role and content is not None:
        delta = DeltaMessage(content=content)
    choice = ChatCompletionResponseStreamChoice(
        index=0, delta=delta, logprobs=None, finish_reason=finish
    )
    chunk = ChatCompletionStreamResponse(
        id="c1", object="chat.completion.chunk", model="gen", created=1, choices=[choice]
    )
    return f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"


CITED = [
    {"id": 1, "source": "a.md", "title": "A", "chunk_id": "a#0", "text": "alpha", "score": 0.9},
    {"id": 2, "source": "b.md", "title": "B", "chunk_id": "b#0", "text": "beta", "score": 0.5},
]
CITING = Grounding("q", CITED, RAG, Citations(CITED, "docs", "docs"))
PIECES = ['It is "alpha" [', "1", "], or [2", "]", " and [9].", " ü [2]"]


def _stream(encoder: Any, events: list[str]) -> list[str]:
    first, *later = events
    return encoder.first(first) + [out for event in later for out in encoder.later(event)]


def _events(finish_with: str | None = None) -> list[str]:
    events = [_vllm_chunk("", role=True)] + [_vllm_chunk(p) for p in PIECES]
    return [*events, _vllm_chunk(finish_with, finish="stop"), "data: [DONE]\n\n"]


@pytest.mark.parametrize("finish_with", [None, "!"])
def test_a_stream_relays_its_chunks_and_annotates_the_finish_chunk(
    finish_with: str | None,
) -> None:
    events = _events(finish_with)
    written = _stream(ChatShaper().encode_stream(CITING), events)
    assert written[1:-2] == events[1:-2]  # the content chunks, byte for byte
    assert written[-1] == "data: [DONE]\n\n"
    delta = json.loads(written[-2].removeprefix("data: "))["choices"][0]["delta"]
    text = "".join(PIECES) + (finish_with or "")
    annotations = delta["annotations"]
    spans = [
        (a["url_citation"]["start_index"], a["url_citation"]["end_index"]) for a in annotations
    ]
    assert [text[start:end] for start, end in spans] == ["[1]", "[2]", "[2]"]  # [9]: no source
    assert [a["url_citation"]["title"] for a in annotations] == ["A", "B", "B"]


def test_the_openai_sdks_stream_helper_keeps_the_streamed_annotations() -> None:
    from openai.lib.streaming.chat import ChatCompletionStreamState
    from openai.types.chat import ChatCompletionChunk

    state = ChatCompletionStreamState()
    for event in _stream(ChatShaper().encode_stream(CITING), _events()):
        if event != "data: [DONE]\n\n":
            state.handle_chunk(ChatCompletionChunk.model_validate_json(event[6:]))
    message = state.get_final_completion().choices[0].message
    assert message.content == "".join(PIECES)
    cited = [
        message.content[a.url_citation.start_index : a.url_citation.end_index]
        for a in message.annotations or []
    ]
    assert cited == ["[1]", "[2]", "[2]"]
    assert {a.url_citation.url for a in message.annotations or []} == {
        "llmserve://docs/a.md",
        "llmserve://docs/b.md",
    }


def test_a_whole_answer_has_its_annotations_as_the_sdk_types_them() -> None:
    from openai.types.chat import ChatCompletion

    text = "".join(PIECES)
    answer = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "gen",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": text},
            }
        ],
    }
    completion = ChatCompletion.model_validate(ChatShaper().encode_answer(answer, CITING))
    annotations = completion.choices[0].message.annotations or []
    assert [text[a.url_citation.start_index : a.url_citation.end_index] for a in annotations] == [
        "[1]",
        "[2]",
        "[2]",
    ]
    assert completion.model_extra["sources"] == CITED


def test_reading_a_content_chunk_costs_less_than_parsing_it() -> None:
    """The relay's per-chunk work: a string search and the JSON string scanner."""
    import timeit

    event = _vllm_chunk(" the engine's next few words")
    relay = ChatShaper().encode_stream(CITING).later
    assert relay is not None and relay(event) == [event]
    read = min(timeit.repeat(lambda: relay(event), number=2000, repeat=5))
    parse = min(timeit.repeat(lambda: json.loads(event[6:]), number=2000, repeat=5))
    assert read < parse
