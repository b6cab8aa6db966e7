"""Token-based chunking with the real MiniLM tokenizer."""

from __future__ import annotations

import pytest

from llmserve.rag.chunking import (
    chunk_document,
    chunk_documents,
    content_hash,
    split_token_windows,
    token_spans,
)
from llmserve.rag.documents import Document

pytestmark = pytest.mark.unit


def sentences(count: int, topic: str = "placement groups") -> str:
    return " ".join(f"Sentence {i} explains {topic} for replicas." for i in range(count))


@pytest.fixture
def long_doc() -> Document:
    text = (
        "# Guide\n\n"
        + sentences(40)
        + "\n\n## Caching\n\n"
        + sentences(30, "the KV cache size")
        + "\n\nCafé naïve façade — ÜBER résumé!  Tabs\tand   spaces stay.\n"
    )
    return Document(source="docs/guide.md", title="Guide", text=text, metadata={"team": "ml"})


def n_tokens(text: str, tokenizer) -> int:
    return len(token_spans(text, tokenizer))


def test_chunks_are_exact_slices_within_the_token_limit(long_doc, minilm_tokenizer):
    chunks = chunk_document(long_doc, minilm_tokenizer, chunk_tokens=64, chunk_overlap_tokens=16)

    assert len(chunks) > 5
    for chunk in chunks:
        assert long_doc.text[chunk.start : chunk.end] == chunk.text
        assert n_tokens(chunk.text, minilm_tokenizer) <= 64
    # Accents, case and odd whitespace survive: no detokenization round trip.
    assert "Café naïve façade — ÜBER résumé!  Tabs\tand   spaces stay." in chunks[-1].text


def test_chunks_cover_the_whole_document_in_order(long_doc, minilm_tokenizer):
    chunks = chunk_document(long_doc, minilm_tokenizer, chunk_tokens=64, chunk_overlap_tokens=16)

    assert chunks[0].start == 0
    assert chunks[-1].end == len(long_doc.text.rstrip())
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert previous.start < current.start
        # Overlapping, or separated by nothing but whitespace: no text is lost.
        assert long_doc.text[previous.end : current.start].strip() == ""


def test_overlap_is_bounded_and_starts_on_a_sentence(long_doc, minilm_tokenizer):
    chunks = chunk_document(long_doc, minilm_tokenizer, chunk_tokens=64, chunk_overlap_tokens=16)

    overlapping = [(a, b) for a, b in zip(chunks, chunks[1:], strict=False) if b.start < a.end]
    assert overlapping
    for previous, current in overlapping:
        shared = long_doc.text[current.start : previous.end]
        assert 0 < n_tokens(shared, minilm_tokenizer) <= 16
        assert current.text.startswith("Sentence")


def test_chunks_prefer_sentence_ends_and_headings(long_doc, minilm_tokenizer):
    chunks = chunk_document(long_doc, minilm_tokenizer, chunk_tokens=64, chunk_overlap_tokens=16)

    for chunk in chunks[:-1]:
        assert chunk.text.endswith((".", "!")), chunk.text[-40:]
    # A chunk ends right before the "## Caching" heading, and the next starts at it
    # without overlapping back into the previous section.
    heading = [c for c in chunks if c.text.startswith("## Caching")]
    assert len(heading) == 1


def test_ids_hashes_and_metadata(long_doc, minilm_tokenizer):
    chunks = chunk_document(long_doc, minilm_tokenizer, chunk_tokens=64, chunk_overlap_tokens=16)
    again = chunk_document(long_doc, minilm_tokenizer, chunk_tokens=64, chunk_overlap_tokens=16)

    assert [c.chunk_id for c in chunks] == [f"docs/guide.md#{i}" for i in range(len(chunks))]
    assert chunks == again  # deterministic
    assert all(c.metadata == {"team": "ml"} and c.title == "Guide" for c in chunks)
    assert chunks[0].content_hash == content_hash("Guide", chunks[0].text)
    assert len({c.content_hash for c in chunks}) == len(chunks)


def test_short_and_empty_documents(minilm_tokenizer):
    short = Document(source="a.txt", title="a", text="  Just one line.  ")
    empty = Document(source="b.txt", title="b", text=" \n\n ")

    chunks = chunk_documents([short, empty], minilm_tokenizer, 200, 40)

    assert [(c.chunk_id, c.text) for c in chunks] == [("a.txt#0", "Just one line.")]


def test_unbroken_text_is_hard_cut_at_the_limit(minilm_tokenizer):
    doc = Document(source="x", title="x", text=" ".join(["token"] * 250))

    chunks = chunk_document(doc, minilm_tokenizer, chunk_tokens=100, chunk_overlap_tokens=10)

    assert [n_tokens(c.text, minilm_tokenizer) for c in chunks] == [100, 100, 70]


def test_jsonl_document_chunks_keep_their_file(minilm_tokenizer):
    doc = Document(source="kb.jsonl:7", title="t", text="Hello.", file="kb.jsonl")

    (chunk,) = chunk_document(doc, minilm_tokenizer)

    assert chunk.chunk_id == "kb.jsonl:7#0"
    assert chunk.file == "kb.jsonl"


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_invalid_sizes_are_rejected(size, overlap):
    with pytest.raises(ValueError):
        split_token_windows([0] * 30, size, overlap)


def test_windows_always_make_progress():
    # Every token is a great break point: windows must still advance and stay in bounds.
    windows = split_token_windows([3] * 50, chunk_tokens=4, overlap_tokens=3)

    starts = [start for start, _ in windows]
    assert starts == sorted(set(starts))
    assert windows[-1][1] == 50
    assert all(0 < end - start <= 4 for start, end in windows)
