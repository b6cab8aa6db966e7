"""Scores of eval replies, and their sums per retrieval mode and query mode.

- recall@k: the gold source is among the reply's ``sources`` (the k chunks in
  the prompt); MRR: 1 / the rank of the first one that is (0 when none is);
- grounded: the reply contains a reference answer (case and spacing ignored);
- citation precision: of the reply's annotations, the share that cite a source
  holding a reference answer (or, for a question without one, a gold source);
  ``cited`` is the share of replies with at least one annotation;
- TTFT and total: seconds to the first content token and to the end, median.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

from llmserve.cli.evaluation.client import Reply
from llmserve.cli.evaluation.questions import EvalItem

_SPACES = re.compile(r"\s+")
_MARKER = re.compile(r"\[(\d+)\]")


def normal(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def is_gold(source: str, golds: list[str]) -> bool:
    """``source`` is a gold document: the same path, or one ending in ``/<gold>``."""
    return any(source == g or source.endswith("/" + g.lstrip("/")) for g in golds)


def gold_rank(item: EvalItem, reply: Reply) -> int | None:
    """The 1-based rank of the first gold source in the reply's sources."""
    for rank, source in enumerate(reply.sources, start=1):
        if is_gold(str(source.get("source", "")), item.sources):
            return rank
    return None


def grounded(item: EvalItem, reply: Reply) -> bool:
    text = normal(reply.text)
    return any(normal(answer) in text for answer in item.answers)


def cited_sources(reply: Reply) -> list[dict[str, Any] | None]:
    """The source each annotation cites (by its ``[n]`` marker); None: none by that number."""
    by_id = {s.get("id"): s for s in reply.sources}
    cited: list[dict[str, Any] | None] = []
    for annotation in reply.annotations:
        span = annotation.url_citation
        marker = _MARKER.fullmatch(reply.text[span.start_index : span.end_index])
        cited.append(by_id.get(int(marker.group(1))) if marker else None)
    return cited


def holds_answer(item: EvalItem, source: dict[str, Any] | None) -> bool:
    if source is None:
        return False
    if item.answers:
        text = normal(str(source.get("text", "")))
        return any(normal(answer) in text for answer in item.answers)
    return is_gold(str(source.get("source", "")), item.sources)


@dataclass
class Scored:
    """One reply's scores (None where the item gives nothing to score against)."""

    item: EvalItem
    retrieval: str
    query: str
    reply: Reply
    rank: int | None
    grounded: bool | None
    citations: int
    precise_citations: int

    def detail(self) -> dict[str, Any]:
        """This reply in ``--json``'s ``replies``."""
        return {
            "id": self.item.id,
            "retrieval": self.retrieval,
            "query": self.query,
            "searched": self.reply.query,
            "gold_rank": self.rank,
            "grounded": self.grounded,
            "citations": self.citations,
            "precise_citations": self.precise_citations,
            "ttft_s": _round(self.reply.ttft_s),
            "total_s": _round(self.reply.total_s),
            "error": self.reply.error,
            "reply": self.reply.text,
        }


def score(item: EvalItem, reply: Reply, retrieval: str, query: str) -> Scored:
    scorable = bool(item.answers or item.sources)
    cited = cited_sources(reply) if scorable else []
    return Scored(
        item=item,
        retrieval=retrieval,
        query=query,
        reply=reply,
        rank=gold_rank(item, reply) if item.sources else None,
        grounded=grounded(item, reply) if item.answers else None,
        citations=len(cited),
        precise_citations=sum(holds_answer(item, source) for source in cited),
    )


def row(retrieval: str, query: str, scored: list[Scored]) -> dict[str, Any]:
    """The sums of one retrieval mode x query mode (``query``: "single" for questions
    without history, where the query mode changes nothing)."""
    ok = [s for s in scored if s.reply.error is None]
    with_gold = [s for s in ok if s.item.sources]
    with_answer = [s for s in ok if s.grounded is not None]
    citations = sum(s.citations for s in ok)
    ttfts = [s.reply.ttft_s for s in ok if s.reply.ttft_s is not None]
    return {
        "retrieval": retrieval,
        "query": query,
        "asked": len(scored),
        "errors": len(scored) - len(ok),
        "k": max((len(s.reply.sources) for s in ok), default=0),
        "recall": _mean([s.rank is not None for s in with_gold]),
        "mrr": _mean([1 / s.rank if s.rank else 0.0 for s in with_gold]),
        "grounded": _mean([bool(s.grounded) for s in with_answer]),
        "citation_precision": _round(
            sum(s.precise_citations for s in ok) / citations if citations else None
        ),
        "cited": _mean([s.citations > 0 for s in ok]),
        "fallbacks": sum("fallback" in s.reply.query for s in ok),
        "ttft_p50_s": _round(statistics.median(ttfts) if ttfts else None),
        "total_p50_s": _round(statistics.median([s.reply.total_s for s in ok]) if ok else None),
    }


def _mean(values: list[bool] | list[float]) -> float | None:
    return _round(sum(values) / len(values)) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
