"""``[n]`` markers as annotations: offsets, markers split across pieces, made-up numbers."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from llmserve.servers.rag.citations import Citations, Marker, MarkerScanner, markers

pytestmark = pytest.mark.unit

SOURCES = [
    {"id": 1, "source": "docs/a b.md", "title": "A", "chunk_id": "docs/a b.md#0"},
    {"id": 2, "source": "docs/b.md", "title": "", "chunk_id": "docs/b.md#3"},
]


def test_markers_are_found_with_their_offsets() -> None:
    text = "Use [1], not [2][10] or [x] or [ 3]."
    found = list(markers(text))
    assert [(text[m.start : m.end], m.number) for m in found] == [
        ("[1]", 1),
        ("[2]", 2),
        ("[10]", 10),
    ]


@pytest.mark.parametrize(
    "pieces",
    [
        ["Run it [1] and [2]."],
        ["Run it [", "1] and [2", "]."],
        ["Run it [1", "", "] and ", "[", "2", "]", "."],
        list("Run it [1] and [2]."),
    ],
)
def test_a_scanner_finds_markers_split_across_pieces_where_they_are(pieces: list[str]) -> None:
    scanner = MarkerScanner()
    completed = [m for piece in pieces for m in scanner.feed(piece)]
    text = "".join(pieces)
    assert completed == scanner.found == list(markers(text))
    assert [text[m.start : m.end] for m in completed] == ["[1]", "[2]"]


def test_a_scanner_forgets_brackets_that_cannot_become_markers() -> None:
    scanner = MarkerScanner()
    for piece in ["a [b", "] [12345", "] [", "x] ü [3", "]"]:
        scanner.feed(piece)
    text = "a [b] [12345] [x] ü [3]"
    assert scanner.found == [Marker(text.index("[3]"), len(text), 3)]


def _count(outcome: str) -> float:
    labels = {"pipeline": "cite", "outcome": outcome}
    return REGISTRY.get_sample_value("llmserve_rag_citation_markers_total", labels) or 0.0


def test_chat_annotations_cite_only_real_sources_and_count_the_others() -> None:
    citations = Citations(SOURCES, "cite", "docs")
    before = _count("annotated"), _count("dropped")
    text = "It is [2], see [1] and [7]."
    annotations = citations.chat_annotations(text)
    assert annotations == [
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": 6,
                "end_index": 9,
                "title": "docs/b.md",  # no title: the source names it
                "url": "llmserve://docs/docs/b.md",
            },
        },
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": 15,
                "end_index": 18,
                "title": "A",
                "url": "llmserve://docs/docs/a%20b.md",
            },
        },
    ]
    assert (_count("annotated"), _count("dropped")) == (before[0] + 2, before[1] + 1)


def test_a_base_url_prefixes_the_source_path() -> None:
    citations = Citations(SOURCES, "cite", "docs", "https://example.org/repo/blob/main/")
    [annotation] = citations.chat_annotations("[1]")
    assert annotation["url_citation"]["url"] == "https://example.org/repo/blob/main/docs/a%20b.md"


def test_file_citations_name_the_chunk_and_can_be_left_uncounted() -> None:
    citations = Citations(SOURCES, "cite", "docs")
    before = _count("annotated")
    assert citations.file_annotations("x [2] y [3]", count=False) == [
        {"type": "file_citation", "file_id": "docs/b.md#3", "filename": "docs/b.md", "index": 2}
    ]
    assert _count("annotated") == before
