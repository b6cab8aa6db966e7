"""Follow-up questions on the default app: the three query modes of ``rag-docs``."""

from __future__ import annotations

import openai
import pytest

PIPELINE = "rag-docs"
EARLIER = "What is the tiny-llama built-in model?"
QUESTION = "How many layers does it have?"
CONVERSATION = [
    {"role": "user", "content": EARLIER},
    {"role": "assistant", "content": "A tiny, randomly initialized Llama model for tests."},
    {"role": "user", "content": QUESTION},
]


@pytest.fixture(scope="module")
def client(default_app):
    return openai.OpenAI(base_url=f"{default_app}/v1", api_key="unused", max_retries=0)


def ask(client, mode: str):
    answer = client.chat.completions.create(
        model=PIPELINE,
        messages=CONVERSATION,
        max_tokens=1,
        temperature=0,
        extra_body={"rag": {"query_mode": mode}},
    )
    return answer.model_extra["rag"], [s["source"] for s in answer.model_extra["sources"]]


def test_history_finds_the_follow_ups_subject_that_its_own_words_miss(client) -> None:
    last, last_sources = ask(client, "last")
    history, history_sources = ask(client, "history")
    assert last["query"] == {"mode": "last", "text": QUESTION}
    assert history["query"] == {"mode": "history", "text": f"{EARLIER}\n{QUESTION}"}
    assert "docs/builtin-models.md" in history_sources
    assert "docs/builtin-models.md" not in last_sources


def test_rewrite_asks_the_generator_for_a_standalone_question(client) -> None:
    rag, sources = ask(client, "rewrite")
    query = rag["query"]
    if query["mode"] == "rewrite":  # the generator answered in time
        assert query["text"] and query["text"] != QUESTION
        assert "rewrite" in rag["timings_ms"]
    else:  # it did not: history, and why
        assert query["mode"] == "history" and query["fallback"] in ("timeout", "error", "empty")
    assert sources
