"""Hostile input on every route of the default app (fused model, RAG) is a 4xx, never a 5xx."""

from __future__ import annotations

import httpx

from tests.fuzz import bases, server_errors

SEED = 6


def test_hostile_input_is_never_a_server_error(default_app):
    routes = bases("smollm2", pipeline="rag-docs", embedder="minilm", reranker="minilm-rerank")
    assert server_errors(default_app, SEED, 420, routes) == []
    assert httpx.get(f"{default_app}/health", timeout=10).status_code == 200


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
