"""A RAG answer's citations as OpenAI annotations, read through the OpenAI SDK's own
types: ``url_citation`` on Chat Completions (whole and streamed), ``file_citation`` on
the Responses API (whole and streamed, with ``annotation.added`` events).

What the 135M generator writes is not the subject here: most tests constrain the
answer to a fixed text with vLLM's ``structured_outputs`` regex (passed through to the
generator like any sampling field), so that it holds known markers, one of them past
the last source; a free answer is only held to annotating exactly its own markers."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from openai.types.chat.chat_completion_message import Annotation
from openai.types.responses import ResponseOutputTextAnnotationAddedEvent
from openai.types.responses.response_output_text import AnnotationFileCitation
from prometheus_client.parser import text_string_to_metric_families

PIPELINE = "rag-docs"
QUESTION = "Which environment variable sets the size of the KV cache when running on CPU?"
# The answer the generator is held to: [1] and [2] name sources (top_n is 4), [9] does not.
ANSWER = "VLLM_CPU_KVCACHE_SPACE sets it [1]; see also [2] and [9]."
# re.escape escapes spaces too, which xgrammar matches but warns about.
FORCED = {"structured_outputs": {"regex": re.escape(ANSWER).replace("\\ ", " ")}}
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


def _spans(annotations: list[Annotation], sources: list[dict]) -> list:
    by_url = {f"llmserve://docs/{s['source']}": s["source"] for s in sources}
    return [
        (a.url_citation.start_index, a.url_citation.end_index, by_url[a.url_citation.url])
        for a in annotations
    ]


def _dropped(default_app: str) -> float:
    """Markers past the last source that rag-docs dropped so far (all replicas)."""
    text = httpx.get(f"{default_app}/metrics", timeout=60).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmserve_rag_citation_markers_total"
        and sample.labels.get("pipeline") == PIPELINE
        and sample.labels.get("outcome") == "dropped"
    )


def test_chat_annotations_are_the_markers_that_name_a_source(client, default_app) -> None:
    dropped = _dropped(default_app)
    kwargs = {
        "model": PIPELINE,
        "messages": _messages(QUESTION),
        "max_tokens": 64,
        "temperature": 0,
        "extra_body": FORCED,
    }
    answer = client.chat.completions.create(**kwargs)
    message = answer.choices[0].message
    sources = answer.model_extra["sources"]
    assert message.content == ANSWER and 2 <= len(sources) < 9
    annotations = message.annotations or []
    assert all(isinstance(a, Annotation) and a.type == "url_citation" for a in annotations)
    one, two = ANSWER.index("[1]"), ANSWER.index("[2]")
    assert _spans(annotations, sources) == [
        (one, one + 3, sources[0]["source"]),
        (two, two + 3, sources[1]["source"]),
    ]
    titles = {f"llmserve://docs/{s['source']}": s["title"] for s in sources}
    assert all(a.url_citation.title == titles[a.url_citation.url] for a in annotations)
    assert _dropped(default_app) == dropped + 1  # the [9]

    with client.chat.completions.stream(**kwargs) as stream:
        streamed = stream.get_final_completion().choices[0].message
    assert streamed.content == ANSWER
    assert streamed.annotations == message.annotations


def test_a_free_answer_annotates_exactly_its_own_markers(client) -> None:
    """Whatever the model writes (markers or none), the annotations are its markers
    that name a source, whole and streamed."""
    kwargs = {"model": PIPELINE, "messages": _messages(QUESTION), "max_tokens": 64}
    answer = client.chat.completions.create(**kwargs, temperature=0, seed=0)
    message = answer.choices[0].message
    sources = answer.model_extra["sources"]
    assert _spans(message.annotations or [], sources) == _expected(message.content, sources)

    with client.chat.completions.stream(**kwargs, temperature=0, seed=0) as stream:
        streamed = stream.get_final_completion()
    content = streamed.choices[0].message.content or ""
    spans = _spans(streamed.choices[0].message.annotations or [], sources)
    assert spans == _expected(content, streamed.model_extra["sources"])


def test_responses_annotations_are_file_citations_announced_while_streaming(client) -> None:
    kwargs = {
        "model": PIPELINE,
        "input": QUESTION,
        "max_output_tokens": 64,
        "temperature": 0,
        "extra_body": FORCED,
    }
    response = client.responses.create(**kwargs)
    search, message = response.output
    [text] = message.content
    assert text.text == ANSWER
    chunk_ids = {r.file_id: r.filename for r in search.results}
    assert all(isinstance(a, AnnotationFileCitation) for a in text.annotations)
    sources = response.model_extra["sources"]
    cited = [(a.index, a.filename) for a in text.annotations]
    assert cited == [
        (ANSWER.index("[1]"), sources[0]["source"]),
        (ANSWER.index("[2]"), sources[1]["source"]),
    ]
    assert all(chunk_ids[a.file_id] == a.filename for a in text.annotations)

    events = list(client.responses.create(**kwargs, stream=True))
    added = [e for e in events if isinstance(e, ResponseOutputTextAnnotationAddedEvent)]
    assert [e.annotation_index for e in added] == [0, 1]
    assert [e.annotation.model_dump() for e in added if e.annotation] == [
        a.model_dump() for a in text.annotations
    ]
    kinds = [e.type for e in events]
    assert max(events.index(e) for e in added) < kinds.index("response.output_text.done")
    final = events[-1].response.output[1].content[0]
    assert [a.model_dump() for a in final.annotations] == [a.model_dump() for a in text.annotations]
