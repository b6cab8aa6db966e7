"""Prompt assembly: numbering, token budget, truncation, template filling."""

from __future__ import annotations

import pytest

from llmserve.rag.prompt import NO_SOURCES, build_messages, format_source
from llmserve.rag.store import Hit

pytestmark = pytest.mark.unit

TEMPLATE = "Sources:\n{context}\n\nQuestion: {question}"


def words(text: str) -> int:
    """A stand-in tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def hit(n: int, length: int = 10) -> Hit:
    text = " ".join(f"w{n}_{i}" for i in range(length))
    return Hit(f"doc{n}.md#0", f"doc{n}.md", f"Doc {n}", text, 1.0 / n, {})


def test_sources_are_numbered_in_rank_order():
    hits = [hit(1), hit(2), hit(3)]

    messages, used = build_messages("Why?", hits, "Be brief.", TEMPLATE, 1000, words)

    assert used == hits
    assert messages[0] == {"role": "system", "content": "Be brief."}
    user = messages[-1]
    assert user["role"] == "user"
    assert user["content"].startswith("Sources:\n[1] Doc 1 (doc1.md)\nw1_0")
    assert user["content"].index("[2] Doc 2 (doc2.md)") < user["content"].index("[3] Doc 3")
    assert user["content"].endswith("Question: Why?")


def test_only_whole_chunks_that_fit_the_budget_are_used():
    hits = [hit(1), hit(2), hit(3)]
    block = words(format_source(1, hits[0]))  # every block has the same size here

    _, used = build_messages("q", hits, None, TEMPLATE, 2 * block + block // 2, words)

    assert used == hits[:2]


def test_a_big_chunk_is_skipped_for_smaller_later_ones():
    hits = [hit(1, 10), hit(2, 500), hit(3, 10)]

    messages, used = build_messages("q", hits, None, TEMPLATE, 40, words)

    assert used == [hits[0], hits[2]]
    assert "[2] Doc 3 (doc3.md)" in messages[-1]["content"]  # renumbered consecutively


def test_first_chunk_is_truncated_when_it_alone_is_too_big():
    big = hit(1, 500)

    messages, used = build_messages("q", [big, hit(2)], None, TEMPLATE, 50, words)

    assert len(used) == 1
    assert used[0].chunk_id == big.chunk_id
    assert used[0].text.endswith(" …")
    assert big.text.startswith(used[0].text[: -len(" …")])
    assert words(format_source(1, used[0])) <= 50
    assert words(format_source(1, used[0])) >= 45  # uses the budget, not just a sliver
    assert used[0].text in messages[-1]["content"]


def test_no_hits_gives_an_explicit_empty_context():
    messages, used = build_messages("q", [], None, TEMPLATE, 100, words)

    assert used == []
    assert messages == [{"role": "user", "content": f"Sources:\n{NO_SOURCES}\n\nQuestion: q"}]


def test_history_goes_between_system_and_question():
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]

    messages, _ = build_messages("q", [hit(1)], "sys", TEMPLATE, 100, words, history=history)

    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1:3] == history


def test_template_braces_and_placeholder_text_in_chunks_stay_literal():
    tricky = Hit("a#0", "a", "A", "literal {question} and {0} here", 1.0, {})
    template = 'Reply as JSON {"answer": ...}.\n{context}\nQ: {question}'

    messages, _ = build_messages("real?", [tricky], None, template, 100, words)

    content = messages[-1]["content"]
    assert content.startswith('Reply as JSON {"answer": ...}.')
    assert "literal {question} and {0} here" in content
    assert content.endswith("Q: real?")


def test_template_without_placeholders_is_rejected():
    with pytest.raises(ValueError, match=r"\{question\}"):
        build_messages("q", [], None, "{context} only", 100, words)


def test_best_last_puts_the_first_source_nearest_the_question_keeping_its_number():
    hits = [hit(1), hit(2), hit(3)]
    messages, used = build_messages("Why?", hits, None, TEMPLATE, 1000, words, best_last=True)
    assert used == hits  # the numbering, and so the answer's sources, stay the rank
    content = messages[-1]["content"]
    assert content.startswith("Sources:\n[3] Doc 3 (doc3.md)")
    assert content.index("[2] Doc 2") < content.index("[1] Doc 1") < content.index("Question:")
