"""Indexing and retrieval against a real vLLM embedding engine and real LanceDB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmserve.rag import ChunkStore, build_index

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / "docs"
QA_FILE = REPO / "tests" / "data" / "rag_qa.jsonl"
MODES = ("hybrid", "dense", "bm25")
TOP_K = 5


# -- incremental indexing ----------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """A private copy of a few docs pages, so the tests can edit and delete files."""
    root = tmp_path_factory.mktemp("corpus") / "kb"
    root.mkdir()
    for name in ("cpu.md", "errors.md", "cli.md"):
        shutil.copy(DOCS / name, root / name)
    (root / "faq.jsonl").write_text(
        json.dumps(
            {"id": "q1", "title": "Ports", "text": "The default port is 8000.", "team": "web"}
        )
        + "\n"
    )
    return root


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> ChunkStore:
    uri = tmp_path_factory.mktemp("lancedb")
    return ChunkStore(uri, "chunks", metadata_fields=["team"], read_consistency_interval=0)


async def index_small(corpus: Path, store: ChunkStore, embed, tokenizer):
    return await build_index(
        [str(corpus)], store, embed, tokenizer, 200, 40, ["team"], progress=False
    )


def sources_in(store: ChunkStore) -> dict[str, int]:
    table = store._open()
    table.checkout_latest()
    counts: dict[str, int] = {}
    for source in table.to_arrow().column("file").to_pylist():
        counts[source] = counts.get(source, 0) + 1
    return counts


async def test_first_run_indexes_everything(small_corpus, small_store, embed, tokenizer):
    report = await index_small(small_corpus, small_store, embed, tokenizer)

    assert report.added_files == ["kb/cli.md", "kb/cpu.md", "kb/errors.md", "kb/faq.jsonl"]
    assert report.chunks_written == report.chunks_embedded == small_store.count()
    assert set(sources_in(small_store)) == set(report.added_files)


async def test_rerun_without_changes_writes_nothing(small_corpus, small_store, embed, tokenizer):
    version = small_store.version

    report = await index_small(small_corpus, small_store, embed, tokenizer)

    assert not report.changed
    assert report.chunks_written == 0
    assert len(report.unchanged_files) == 4
    assert small_store.version == version == report.table_version


async def test_edited_file_chunks_are_replaced(small_corpus, small_store, embed, tokenizer):
    before = sources_in(small_store)
    path = small_corpus / "cpu.md"
    path.write_text(
        path.read_text()
        + "\n## Quokka mode\n\nThe quokka flag makes the CPU engine hum a tune while loading.\n"
    )

    report = await index_small(small_corpus, small_store, embed, tokenizer)

    assert report.updated_files == ["kb/cpu.md"]
    assert report.added_files == report.removed_files == []
    after = sources_in(small_store)
    assert after["kb/cpu.md"] == report.chunks_written
    assert {k: v for k, v in after.items() if k != "kb/cpu.md"} == {
        k: v for k, v in before.items() if k != "kb/cpu.md"
    }
    # Chunks whose text did not change keep their vectors instead of being re-embedded.
    assert report.chunks_embedded < report.chunks_written
    # The new text is searchable by keyword (the FTS index was rebuilt) and
    # ids stay unique: exactly one chunk per (source, index).
    hits = small_store.search("quokka flag", None, "bm25", 5)
    assert hits and hits[0].source == "kb/cpu.md"
    table = small_store._open()
    ids = table.to_arrow().column("chunk_id").to_pylist()
    assert len(ids) == len(set(ids))


async def test_removed_file_chunks_are_dropped(small_corpus, small_store, embed, tokenizer):
    (small_corpus / "errors.md").unlink()

    report = await index_small(small_corpus, small_store, embed, tokenizer)

    assert report.removed_files == ["kb/errors.md"]
    assert report.chunks_written == 0
    assert "kb/errors.md" not in sources_in(small_store)
    query = (await embed(["Which status codes should be retried?"]))[0]
    hits = small_store.search("retry status codes", query, "hybrid", 10)
    assert all(hit.source != "kb/errors.md" for hit in hits)
    assert small_store.search("anything", query, "dense", 5, {"source": "kb/errors.md"}) == []


async def test_metadata_filter_on_real_index(small_store, embed):
    query = (await embed(["which port does the server listen on"]))[0]

    hits = small_store.search("port", query, "hybrid", 5, {"team": "web"})

    assert [hit.chunk_id for hit in hits] == ["kb/faq.jsonl:q1#0"]
    assert hits[0].metadata == {"team": "web"}


# -- retrieval quality on the bundled docs ------------------------------------


@pytest.fixture(scope="module")
def docs_store(tmp_path_factory, embed, tokenizer) -> ChunkStore:
    import asyncio

    store = ChunkStore(tmp_path_factory.mktemp("docs-index"), "chunks", metadata_fields=[])
    report = asyncio.run(
        build_index([str(DOCS)], store, embed, tokenizer, 200, 40, [], progress=False)
    )
    assert report.chunks_written > 0
    return store


def load_questions() -> list[dict[str, str]]:
    return [json.loads(line) for line in QA_FILE.read_text().splitlines() if line.strip()]


async def test_retrieval_recall_at_5(docs_store, embed, tmp_path_factory):
    questions = load_questions()
    assert len(questions) >= 24
    vectors = await embed([q["question"] for q in questions])
    # Rank (1-based) of the first chunk from the labelled file, None if not in the top 5.
    ranks: dict[str, list[int | None]] = {mode: [] for mode in MODES}
    misses: dict[str, list[str]] = {mode: [] for mode in MODES}
    for item, vector in zip(questions, vectors, strict=True):
        for mode in MODES:
            hits = docs_store.search(item["question"], vector, mode, TOP_K)
            names = [Path(hit.source).name for hit in hits]
            rank = names.index(item["source"]) + 1 if item["source"] in names else None
            ranks[mode].append(rank)
            if rank is None:
                misses[mode].append(item["question"])
    n = len(questions)
    recall = {mode: sum(r is not None for r in ranks[mode]) / n for mode in MODES}
    recall_at_1 = {mode: sum(r == 1 for r in ranks[mode]) / n for mode in MODES}
    mrr = {mode: sum(1 / r for r in ranks[mode] if r) / n for mode in MODES}

    lines = [
        f"retrieval over {n} questions, {docs_store.count()} chunks from docs/",
        f"{'mode':<8} {'recall@5':>8} {'recall@1':>8} {'MRR@5':>7}",
        *(
            f"{mode:<8} {recall[mode]:>8.3f} {recall_at_1[mode]:>8.3f} {mrr[mode]:>7.3f}"
            for mode in MODES
        ),
    ]
    for mode in MODES:
        lines += [f"  {mode} missed: {question}" for question in misses[mode]]
    table = "\n".join(lines)
    print("\n" + table)
    out = tmp_path_factory.mktemp("rag-eval") / "recall.txt"
    out.write_text(table + "\n")
    print(f"(written to {out})")

    assert recall["hybrid"] >= 0.9
    assert recall["hybrid"] >= max(recall["dense"], recall["bm25"])
