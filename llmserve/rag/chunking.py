"""Split documents into overlapping, token-bounded chunks.

Chunk sizes are measured with the *embedding model's own* tokenizer, so a chunk
of ``chunk_tokens`` tokens is guaranteed to fit the embedder's context. Token
offsets (a fast tokenizer's ``offset_mapping``) map token windows back to
character spans, so every chunk is an exact slice of the original text: no
detokenization artifacts such as lower-casing, stripped accents or ``##``
word pieces leak into what is shown to the LLM or cited back to the user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmserve.rag.documents import Document


class OffsetTokenizer(Protocol):
    """What the chunker needs: a HF *fast* tokenizer, or anything shaped like one."""

    def __call__(
        self, text: str, *, add_special_tokens: bool, return_offsets_mapping: bool, **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True)
class Chunk:
    """A slice of a document, the unit that is embedded, indexed and retrieved.

    ``start``/``end`` are character offsets into the document text, so
    ``document.text[start:end] == text``.
    """

    chunk_id: str
    source: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    index: int = 0
    file: str = ""
    start: int = 0
    end: int = 0


# Break-point quality, best first. A chunk preferably ends right before a
# Markdown heading, then at a blank line, a line break, the end of a sentence.
_BREAK_HEADING = 4
_BREAK_PARAGRAPH = 3
_BREAK_LINE = 2
_BREAK_SENTENCE = 1
_SENTENCE_END = (".", "!", "?", ":", ";")


def token_spans(text: str, tokenizer: OffsetTokenizer) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of every token of ``text``, without special tokens."""
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoding["offset_mapping"]
    if offsets and isinstance(offsets[0], list) and offsets[0] and isinstance(offsets[0][0], list):
        offsets = offsets[0]  # a batched encoding of one text
    # Zero-width spans carry no text (some tokenizers emit them for markers).
    return [(int(s), int(e)) for s, e in offsets if e > s]


def _break_scores(text: str, spans: Sequence[tuple[int, int]]) -> list[int]:
    """``scores[i]`` rates ending a chunk right after token ``i``."""
    scores = []
    for i, (_, end) in enumerate(spans):
        next_start = spans[i + 1][0] if i + 1 < len(spans) else len(text)
        gap = text[end:next_start]
        if "\n" in gap:
            following = text[next_start : next_start + 1]
            if following == "#":
                scores.append(_BREAK_HEADING)
            elif gap.count("\n") >= 2:
                scores.append(_BREAK_PARAGRAPH)
            else:
                scores.append(_BREAK_LINE)
        elif gap and text[end - 1] in _SENTENCE_END:
            scores.append(_BREAK_SENTENCE)
        else:
            scores.append(0)
    return scores


def split_token_windows(
    scores: Sequence[int], chunk_tokens: int, overlap_tokens: int
) -> list[tuple[int, int]]:
    """Plan ``[start, end)`` token windows over ``len(scores)`` tokens.

    Each window holds at most ``chunk_tokens`` tokens. Within the second half
    of the allowed size it ends at the best available break (latest among
    equals), so chunks rarely cut a sentence. The next window starts
    ``overlap_tokens`` back, moved forward to the first sentence start inside
    the overlap when there is one, so overlaps read naturally; a window that
    ends right before a Markdown heading gets no overlap at all.
    """
    if chunk_tokens <= 0:
        raise ValueError("chunk_tokens must be positive")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError("chunk_overlap_tokens must be >= 0 and < chunk_tokens")
    n = len(scores)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        hard_end = min(start + chunk_tokens, n)
        end = hard_end
        if hard_end < n:
            lowest = start + max(1, chunk_tokens // 2)
            best = max(range(lowest, hard_end + 1), key=lambda e: (scores[e - 1], e))
            if scores[best - 1] > 0:
                end = best
        windows.append((start, end))
        if end >= n:
            break
        next_start = end - overlap_tokens
        if scores[end - 1] >= _BREAK_HEADING:
            # A new section starts here: overlapping into the old one adds no context.
            next_start = end
        elif overlap_tokens:
            lowest_start = max(next_start, start + 1)
            aligned = [p for p in range(lowest_start, end) if scores[p - 1] > 0]
            if aligned:
                next_start = aligned[0]
        start = max(next_start, start + 1)
    return windows


def chunk_document(
    document: Document,
    tokenizer: OffsetTokenizer,
    chunk_tokens: int = 200,
    chunk_overlap_tokens: int = 40,
) -> list[Chunk]:
    """Split one document into chunks; ids are ``f"{source}#{index}"``."""
    spans = token_spans(document.text, tokenizer)
    windows = split_token_windows(
        _break_scores(document.text, spans), chunk_tokens, chunk_overlap_tokens
    )
    chunks = []
    for index, (first, last) in enumerate(windows):
        start, end = spans[first][0], spans[last - 1][1]
        text = document.text[start:end]
        chunks.append(
            Chunk(
                chunk_id=f"{document.source}#{index}",
                source=document.source,
                title=document.title,
                text=text,
                metadata=dict(document.metadata),
                content_hash=content_hash(document.title, text),
                index=index,
                file=document.file,
                start=start,
                end=end,
            )
        )
    return chunks


def chunk_documents(
    documents: Iterable[Document],
    tokenizer: OffsetTokenizer,
    chunk_tokens: int = 200,
    chunk_overlap_tokens: int = 40,
) -> list[Chunk]:
    """Chunk many documents, in order."""
    chunks: list[Chunk] = []
    for document in documents:
        chunks.extend(chunk_document(document, tokenizer, chunk_tokens, chunk_overlap_tokens))
    return chunks


def embedding_text(title: str, text: str) -> str:
    """What gets embedded for a chunk: its document title, then the chunk text.

    A chunk from the middle of a page often never names its topic ("set it to
    1 GiB"); prefixing the title gives the dense embedding that context.
    """
    return f"{title}\n\n{text}" if title else text


def content_hash(title: str, text: str) -> str:
    """SHA-256 over what a chunk's embedding depends on (see :func:`embedding_text`)."""
    return hashlib.sha256(embedding_text(title, text).encode()).hexdigest()
