"""A pipeline's chat shaper: the question from ``messages``, the generator's request,
and the sources on a whole answer or on a stream's first event only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmserve.openai.errors import APIError
from llmserve.servers.rag.chat import ChatShaper
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
