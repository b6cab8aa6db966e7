"""Eval sets: the file format, its errors, and the shipped set over docs/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmserve.cli.evaluation.questions import DEFAULT_SET, EvalSetError, load

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[4]


def test_a_file_with_singles_and_follow_ups_loads(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    lines = [
        {"question": "What is X?", "source": "x.md", "answer": "ex"},
        {},
        {
            "id": "fu",
            "history": [
                {"role": "user", "content": "What is X?"},
                {"role": "assistant", "content": "Ex."},
            ],
            "question": "And Y?",
            "source": ["y.md", "z.md"],
            "answer": ["why", "wye"],
        },
    ]
    path.write_text("\n".join(json.dumps(line) if line else "" for line in lines) + "\n")
    single, follow = load(path)
    assert (single.followup, single.sources, single.answers) == (False, ["x.md"], ["ex"])
    assert follow.followup and follow.sources == ["y.md", "z.md"]
    assert follow.messages()[-1] == {"role": "user", "content": "And Y?"}
    assert [m["role"] for m in follow.messages()] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "line 1: not JSON"),
        ('{"answer": "x"}', "line 1: question: Field required"),
        ('{"question": "  "}', "line 1: question: String should have at least 1 character"),
        ('{"question": "q", "sources": "x.md"}', "line 1: sources: Extra inputs"),
        ('{"question": "q", "history": [{"role": "tool", "content": "x"}]}', "history.0.role"),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(EvalSetError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}, ") and reason in str(err.value)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(EvalSetError, match="no questions"):
        load(tmp_path / "empty.jsonl")


def test_the_shipped_set_is_answerable_from_docs_and_never_gives_its_answers_away() -> None:
    """Each reference answer is in its gold document (docs/ is the default corpus), and
    none is in its question or history, where a reply could copy it from."""
    items = load(DEFAULT_SET)
    assert sum(i.followup for i in items) >= 10 and sum(not i.followup for i in items) >= 25
    assert len({i.id for i in items}) == len(items)
    for item in items:
        [source] = item.sources
        document = (ROOT / source).read_text().lower()
        asked = " ".join(m["content"] for m in item.messages()).lower()
        assert any(a.lower() in document for a in item.answers), item.id
        assert not any(a.lower() in asked for a in item.answers), item.id
