"""A RAG answer's citations as OpenAI annotations, read through the OpenAI SDK's own
types: ``url_citation`` on Chat Completions (whole and streamed), ``file_citation`` on
the Responses API (whole and streamed, with ``annotation.added`` events)."""

from __future__ import annotations

import re

import openai
import pytest
from openai.types.chat.chat_completion_message import Annotation
from openai.types.responses import ResponseOutputTextAnnotationAddedEvent
from openai.types.responses.response_output_text import AnnotationFileCitation

PIPELINE = "rag-docs"
# Questions whose answers from the default generator cite sources at temperature 0.
QUESTIONS = [
    "Which environment variable sets the size of the KV cache when running on CPU?",
    "How does hybrid search merge the dense and BM25 result lists?",
]
MARKER = re.compile(r"\[(\d{1,4})\]")


@pytest.fixture(scope="module")
def client(default_app):
    return openai.OpenAI(base_url=f"{default_app}/v1", api_key="unused", max_retries=0)


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def _expected(text: str, sources: list[dict]) -> list[tuple[int, int, str]]:
    """(start, end, source) of each marker that names a source."""
    return [
        (m.start(), m.end(), sources[int(m.group(1)) - 1]["source"])
        for m in MARKER.finditer(text)
        if 1 <= int(m.group(1)) <= len(sources)
    ]


def _spans(text: str, annotations: list[Annotation], sources: list[dict]) -> list:
    by_url = {f"llmserve://docs/{s['source']}": s["source"] for s in sources}
    return [
        (a.url_citation.start_index, a.url_citation.end_index, by_url[a.url_citation.url])
        for a in annotations
    ]


@pytest.mark.parametrize("question", QUESTIONS)
def test_chat_annotations_are_the_markers_that_name_a_source(client, question) -> None:
    answer = client.chat.completions.create(
        model=PIPELINE, messages=_messages(question), max_tokens=64, temperature=0
    )
    message = answer.choices[0].message
    sources = answer.model_extra["sources"]
    annotations = message.annotations or []
    assert annotations, message.content  # the question is one the model cites for
    assert all(isinstance(a, Annotation) and a.type == "url_citation" for a in annotations)
    assert _spans(message.content, annotations, sources) == _expected(message.content, sources)
    titles = {f"llmserve://docs/{s['source']}": s["title"] for s in sources}
    assert all(a.url_citation.title == titles[a.url_citation.url] for a in annotations)

    with client.chat.completions.stream(
        model=PIPELINE, messages=_messages(question), max_tokens=64, temperature=0
    ) as stream:
        streamed = stream.get_final_completion().choices[0].message
    assert streamed.content == message.content
    assert streamed.annotations == message.annotations


def test_responses_annotations_are_file_citations_announced_while_streaming(client) -> None:
    kwargs = {"model": PIPELINE, "input": QUESTIONS[0], "max_output_tokens": 64, "temperature": 0}
    response = client.responses.create(**kwargs)
    search, message = response.output
    [text] = message.content
    chunk_ids = {r.file_id: r.filename for r in search.results}
    assert text.annotations
    assert all(isinstance(a, AnnotationFileCitation) for a in text.annotations)
    cited = [(a.index, a.filename) for a in text.annotations]
    sources = response.model_extra["sources"]
    assert cited == [(start, source) for start, _, source in _expected(text.text, sources)]
    assert all(chunk_ids[a.file_id] == a.filename for a in text.annotations)

    events = list(client.responses.create(**kwargs, stream=True))
    added = [e for e in events if isinstance(e, ResponseOutputTextAnnotationAddedEvent)]
    assert [e.annotation_index for e in added] == list(range(len(text.annotations)))
    assert [e.annotation.model_dump() for e in added if e.annotation] == [
        a.model_dump() for a in text.annotations
    ]
    kinds = [e.type for e in events]
    assert max(events.index(e) for e in added) < kinds.index("response.output_text.done")
    final = events[-1].response.output[1].content[0]
    assert [a.model_dump() for a in final.annotations] == [a.model_dump() for a in text.annotations]
