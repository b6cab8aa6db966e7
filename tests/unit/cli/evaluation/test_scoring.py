"""Scores of eval replies and their rows: recall, MRR, grounding, citation precision."""

from __future__ import annotations

import pytest
from openai.types.chat.chat_completion_message import Annotation

from llmserve.cli.evaluation.client import Reply
from llmserve.cli.evaluation.questions import EvalItem
from llmserve.cli.evaluation.scoring import is_gold, row, score

pytestmark = pytest.mark.unit

SOURCES = [
    {"id": 1, "source": "docs/a.md", "text": "Alpha is the first letter."},
    {"id": 2, "source": "docs/cpu.md", "text": "Set VLLM_CPU_KVCACHE_SPACE in GiB."},
]


def _cite(text: str, marker: str) -> Annotation:
    start = text.index(marker)
    return Annotation.model_validate(
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": start,
                "end_index": start + len(marker),
                "title": "t",
                "url": "llmserve://docs/x",
            },
        }
    )


def _reply(text: str, markers: list[str], **fields: object) -> Reply:
    return Reply(
        text=text, sources=SOURCES, annotations=[_cite(text, m) for m in markers], **fields
    )  # type: ignore[arg-type]


ITEM = EvalItem(question="Which variable?", source="cpu.md", answer="VLLM_CPU_KVCACHE_SPACE")


def test_gold_sources_match_by_path_or_its_trailing_part() -> None:
    assert is_gold("docs/cpu.md", ["cpu.md"]) and is_gold("docs/cpu.md", ["docs/cpu.md"])
    assert not is_gold("docs/gpu.md", ["pu.md"])


def test_a_reply_is_scored_on_rank_grounding_and_each_citation() -> None:
    text = "Set vllm_cpu_kvcache_space [2], see [1] and [9]."
    scored = score(ITEM, _reply(text, ["[2]", "[1]"]), "default", "single")
    assert (scored.rank, scored.grounded) == (2, True)
    assert (scored.citations, scored.precise_citations) == (2, 1)


def test_without_an_answer_a_citation_is_precise_when_it_cites_a_gold_source() -> None:
    item = EvalItem(question="q", source="a.md")
    scored = score(item, _reply("It is [1] or [2].", ["[1]", "[2]"]), "default", "single")
    assert (scored.rank, scored.grounded, scored.precise_citations) == (1, None, 1)


def test_a_row_sums_its_replies() -> None:
    hit = score(
        ITEM,
        _reply("VLLM_CPU_KVCACHE_SPACE [2]", ["[2]"], ttft_s=0.5, total_s=2.0),
        "bm25",
        "history",
    )
    miss = score(
        ITEM,
        Reply(
            text="no idea",
            sources=SOURCES[:1],
            query={"fallback": "timeout"},
            ttft_s=1.5,
            total_s=4.0,
        ),
        "bm25",
        "history",
    )
    failed = score(ITEM, Reply(error="RateLimitError: busy", total_s=0.1), "bm25", "history")
    assert row("bm25", "history", [hit, miss, failed]) == {
        "retrieval": "bm25",
        "query": "history",
        "asked": 3,
        "errors": 1,
        "k": 2,
        "recall": 0.5,
        "mrr": 0.25,
        "grounded": 0.5,
        "citation_precision": 1.0,
        "cited": 0.5,
        "fallbacks": 1,
        "ttft_p50_s": 1.0,
        "total_p50_s": 3.0,
    }
