"""A RAG answer's ``[n]`` markers as OpenAI annotations, so stock clients keep the citations.

OpenAI client libraries (the SDKs, LangChain, Open WebUI, the Vercel AI SDK) read
citations from ``annotations``, not from llmserve's ``sources``: on Chat
Completions a ``url_citation`` per marker in ``message.annotations``, on the
Responses API a ``file_citation`` per marker in ``output_text.annotations``.
Only a marker that names a source of the prompt becomes an annotation; one past
the last source (the model made it up) is dropped and counted in
``CITATION_MARKERS``.

Offsets count characters of the answer as Python's ``str`` does (Unicode code
points); ``start_index``/``end_index`` delimit the marker itself, end exclusive,
so ``text[start_index:end_index] == "[2]"``.

A stream's text arrives in pieces; ``MarkerScanner`` finds the markers in it
with a running buffer that holds only an unfinished ``[12`` split across pieces,
so a piece without ``[`` costs one ``len``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from prometheus_client import Counter

MARKER = re.compile(r"\[(\d{1,4})\]")
"""A citation as the prompt asks for it: ``[n]``."""
_LONGEST = len("[9999]")

CITATION_MARKERS = Counter(
    "llmserve_rag_citation_markers_total",
    "[n] markers in RAG answers: annotated (names a source of the prompt) or dropped "
    "(a number past the last source).",
    ["pipeline", "outcome"],
)


@dataclass(frozen=True, slots=True)
class Marker:
    """One ``[n]`` in an answer: ``text[start:end]``, citing source ``number``."""

    start: int
    end: int
    number: int


def markers(text: str, offset: int = 0) -> Iterator[Marker]:
    """Every ``[n]`` in ``text``, at positions moved by ``offset``."""
    for match in MARKER.finditer(text):
        yield Marker(offset + match.start(), offset + match.end(), int(match.group(1)))


class MarkerScanner:
    """Finds the markers of a text fed piece by piece (a stream's deltas)."""

    __slots__ = ("found", "_offset", "_pending")

    def __init__(self) -> None:
        self.found: list[Marker] = []
        self._offset = 0  # characters before ``_pending``
        self._pending = ""  # an unfinished marker at the end of what was fed

    def feed(self, piece: str) -> list[Marker]:
        """The markers this piece completes (also added to ``found``)."""
        if not self._pending and "[" not in piece:
            self._offset += len(piece)
            return []
        text = self._pending + piece
        new = list(markers(text, self._offset))
        self.found.extend(new)
        cut = text.rfind("[")
        tail = text[cut + 1 :] if cut >= 0 else ""
        if cut >= 0 and len(text) - cut < _LONGEST and (not tail or tail.isdigit()):
            self._pending, self._offset = text[cut:], self._offset + cut
        else:
            self._pending, self._offset = "", self._offset + len(text)
        return new


class Citations:
    """The sources one answer may cite, and their annotations in each API's shape."""

    def __init__(
        self,
        sources: Sequence[dict[str, Any]],
        pipeline: str,
        corpus: str,
        base_url: str | None = None,
    ) -> None:
        """``sources``: the prompt's numbered sources (``Source`` dicts, ``id`` = n);
        ``corpus``: the retriever's id, in the ``llmserve://`` URL when ``base_url`` is None."""
        self._by_number = {int(s["id"]): s for s in sources}
        self._pipeline = pipeline
        self._base = base_url if base_url is not None else f"llmserve://{quote(corpus)}/"

    def url(self, source: dict[str, Any]) -> str:
        """``base_url`` + the document's path (its ``source``)."""
        return self._base + quote(str(source["source"]), safe="/")

    def valid(
        self, found: Sequence[Marker], count: bool = True
    ) -> list[tuple[Marker, dict[str, Any]]]:
        """The markers that name a source, with it; ``count``: add them to
        ``CITATION_MARKERS`` (once per marker: a stream's done events recount none)."""
        kept = [(m, s) for m in found if (s := self._by_number.get(m.number)) is not None]
        if not count:
            return kept
        if kept:
            CITATION_MARKERS.labels(self._pipeline, "annotated").inc(len(kept))
        if len(found) > len(kept):
            CITATION_MARKERS.labels(self._pipeline, "dropped").inc(len(found) - len(kept))
        return kept

    def url_citation(self, marker: Marker, source: dict[str, Any]) -> dict[str, Any]:
        """A Chat Completions annotation."""
        return {
            "type": "url_citation",
            "url_citation": {
                "start_index": marker.start,
                "end_index": marker.end,
                "title": source["title"] or source["source"],
                "url": self.url(source),
            },
        }

    def file_citation(self, marker: Marker, source: dict[str, Any]) -> dict[str, Any]:
        """A Responses API annotation: the chunk (as in the ``file_search_call`` results)
        cited at the marker's start."""
        return {
            "type": "file_citation",
            "file_id": source["chunk_id"],
            "filename": source["source"],
            "index": marker.start,
        }

    def chat_annotations(self, text: str) -> list[dict[str, Any]]:
        """A whole chat answer's annotations."""
        return self.chat_annotations_of(list(markers(text)))

    def chat_annotations_of(self, found: Sequence[Marker]) -> list[dict[str, Any]]:
        return [self.url_citation(m, s) for m, s in self.valid(found)]

    def file_annotations(self, text: str, count: bool = True) -> list[dict[str, Any]]:
        """A whole Responses ``output_text``'s annotations."""
        found = list(markers(text))
        return [self.file_citation(m, s) for m, s in self.valid(found, count)]
