"""Hostile input on every route of the default app (fused model, RAG) is a 4xx, never a 5xx,
and a request past a cost cap is refused at once, before it costs the engines anything."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fuzz import bases, server_errors

SEED = 6
HI = {"role": "user", "content": "hi"}


def test_hostile_input_is_never_a_server_error(default_app):
    routes = bases("smollm2", pipeline="rag-docs", embedder="minilm", reranker="minilm-rerank")
    assert server_errors(default_app, SEED, 420, routes) == []
    assert httpx.get(f"{default_app}/health", timeout=10).status_code == 200


def _post(url: str, path: str, body: dict | bytes, timeout: float = 30) -> httpx.Response:
    if isinstance(body, bytes):
        headers = {"Content-Type": "application/json"}
        return httpx.post(f"{url}{path}", content=body, headers=headers, timeout=timeout)
    return httpx.post(f"{url}{path}", json=body, timeout=timeout)


def _deep(model: str, field: str) -> bytes:
    return f'{{"model": "{model}", "{field}": '.encode() + b"[" * 3000 + b"]" * 3000 + b"}"


TEXT_123 = {"role": "user", "content": [{"type": "text", "text": 123}]}
ITEM_123 = {"role": "user", "content": [{"type": "input_text", "text": 123}]}

# Issue 17's shapes, and their kin on each API, for the plain model and the pipeline.
MALFORMED = [
    ("/v1/chat/completions", _deep("smollm2", "messages"), None),
    ("/v1/chat/completions", _deep("rag-docs", "messages"), None),
    ("/v1/responses", _deep("rag-docs", "input"), None),
    ("/v1/rerank", _deep("minilm-rerank", "documents"), None),
    ("/v1/chat/completions", {"model": "rag-docs", "messages": [5, HI]}, "messages[0]"),
    (
        "/v1/chat/completions",
        {"model": "rag-docs", "messages": [TEXT_123]},
        "messages[0].content[0].text",
    ),
    (
        "/v1/chat/completions",
        {"model": "rag-docs", "messages": [{"role": 5, "content": "q"}]},
        "messages[0].role",
    ),
    ("/v1/responses", {"model": "rag-docs", "input": [5, HI]}, "input[0]"),
    ("/v1/responses", {"model": "rag-docs", "input": [HI, ITEM_123]}, "input[1].content[0].text"),
    ("/v1/chat/completions", {"model": "smollm2", "messages": [5, HI]}, None),
    ("/v1/chat/completions", {"model": "smollm2", "messages": [TEXT_123]}, None),
    ("/v1/responses", {"model": "smollm2", "input": [5, HI]}, None),
    ("/v1/responses", {"model": "smollm2", "input": [ITEM_123]}, None),
]


def body_model(body: dict | bytes) -> str:
    if isinstance(body, bytes):
        return body.split(b'"model": "', 1)[1].split(b'"', 1)[0].decode()
    return body["model"]


@pytest.mark.parametrize(("path", "body", "param"), MALFORMED)
def test_a_malformed_body_is_400_naming_the_field(default_app, path, body, param):
    response = _post(default_app, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    if body_model(body) == "smollm2" and param is None:
        # what vLLM's request models refuse is answered as bare vLLM answers it
        assert error["type"] in ("invalid_request_error", "BadRequestError"), error
    else:
        assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
        assert param in error["message"]


DOCUMENTS = ["d"] * 100_000

# Past the default caps (config/limits.py), each refused before admission: at once.
CAPPED = [
    (
        "/v1/chat/completions",
        {"model": "smollm2", "messages": [HI], "n": 512, "max_tokens": 1},
        "n",
    ),
    ("/v1/chat/completions", {"model": "rag-docs", "messages": [HI], "n": 512}, "n"),
    ("/v1/completions", {"model": "smollm2", "prompt": ["hi"] * 100, "max_tokens": 1}, "prompt"),
    ("/v1/chat/completions", {"model": "smollm2", "messages": [HI], "stop": list("abcde")}, "stop"),
    ("/v1/responses", {"model": "smollm2", "input": "hi", "top_logprobs": 21}, "top_logprobs"),
    ("/v1/rerank", {"model": "minilm-rerank", "query": "q", "documents": DOCUMENTS}, "documents"),
    ("/v1/embeddings", {"model": "minilm", "input": DOCUMENTS}, "input"),
    (
        "/v1/chat/completions",
        {"model": "rag-docs", "messages": [HI], "rag": {"top_k": 51}},
        "rag.top_k",
    ),
]


@pytest.mark.parametrize(("path", "body", "param"), CAPPED)
def test_a_request_past_a_cap_is_400_at_once(default_app, path, body, param):
    start = time.perf_counter()
    response = _post(default_app, path, body)
    took = time.perf_counter() - start
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert "at most" in error["message"]
    assert took < 2, f"{took:.1f} s: the cap was not checked before the work"


def test_a_query_longer_than_the_embedder_takes_is_400_naming_the_limit(default_app):
    query = "word " * 20_000
    retrieve = httpx.post(
        f"{default_app}/v1/retrieve", json={"pipeline": "rag-docs", "query": query}, timeout=60
    )
    assert retrieve.status_code == 400
    assert "maximum context length is 256 tokens" in retrieve.json()["error"]["message"]
    chat = httpx.post(
        f"{default_app}/v1/chat/completions",
        json={"model": "rag-docs", "messages": [{"role": "user", "content": query}]},
        timeout=60,
    )
    assert chat.status_code == 400
    assert "maximum context length" in chat.json()["error"]["message"]
    embeddings = httpx.post(
        f"{default_app}/v1/embeddings", json={"model": "minilm", "input": query}, timeout=60
    )
    assert embeddings.status_code == 400
