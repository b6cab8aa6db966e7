"""Incremental indexing with a deterministic fake embedder (no vLLM)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from llmserve.rag.indexer import build_index
from llmserve.rag.store import ChunkStore

pytestmark = pytest.mark.unit

DIM = 8


class FakeEmbedder:
    """Bag-of-words hashed into 8 dimensions; records every text it embeds."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.calls = 0

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.texts.extend(texts)
        vectors = []
        for text in texts:
            vector = [0.0] * DIM
            for word in text.lower().split():
                vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
        return vectors


def paragraph(topic: str, count: int) -> str:
    return " ".join(f"Fact {i} about {topic} is worth knowing." for i in range(count))


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "kb"
    root.mkdir()
    (root / "alpha.md").write_text("# Alpha\n\n" + paragraph("alpacas", 30) + "\n")
    (root / "beta.txt").write_text(paragraph("beetles", 5) + "\n")
    (root / "faq.jsonl").write_text(
        json.dumps({"id": "p", "text": "Port 8000 is the default.", "team": "web"}) + "\n"
    )
    return root


@pytest.fixture
def store(tmp_path):
    return ChunkStore(
        tmp_path / "db", "chunks", metadata_fields=["team"], read_consistency_interval=0
    )


async def run(corpus, store, embed, tokenizer, **kwargs):
    options = {"chunk_tokens": 64, "chunk_overlap_tokens": 8, "metadata_fields": ["team"]}
    options.update(kwargs)
    return await build_index([str(corpus)], store, embed, tokenizer, progress=False, **options)


async def test_first_run_then_noop(corpus, store, minilm_tokenizer):
    embed = FakeEmbedder()
    first = await run(corpus, store, embed, minilm_tokenizer, batch_size=4)

    assert first.added_files == ["kb/alpha.md", "kb/beta.txt", "kb/faq.jsonl"]
    assert first.chunks_written == first.chunks_embedded == store.count() == len(embed.texts)
    assert embed.calls == math.ceil(len(embed.texts) / 4)
    assert embed.texts[0].startswith("Alpha\n\n# Alpha")  # title prefixed for embedding
    version = store.version

    second = await run(corpus, store, embed, minilm_tokenizer)

    assert not second.changed
    assert second.unchanged_files == first.added_files
    assert second.chunks_written == 0
    assert store.version == version == second.table_version
    assert embed.calls == math.ceil(first.chunks_embedded / 4)  # nothing new embedded


async def test_edit_reembeds_only_changed_chunks(corpus, store, minilm_tokenizer):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer)
    alpha = corpus / "alpha.md"
    alpha.write_text(alpha.read_text() + "\nA closing remark about llamas.\n")
    embed = FakeEmbedder()

    report = await run(corpus, store, embed, minilm_tokenizer)

    assert report.updated_files == ["kb/alpha.md"]
    assert 0 < report.chunks_embedded < report.chunks_written
    assert all("alpacas" in t or "llamas" in t for t in embed.texts)
    assert [h.source for h in store.search("llamas", None, "bm25", 3)] == ["kb/alpha.md"]


async def test_removed_file_is_dropped(corpus, store, minilm_tokenizer):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer)
    (corpus / "beta.txt").unlink()

    report = await run(corpus, store, FakeEmbedder(), minilm_tokenizer)

    assert report.removed_files == ["kb/beta.txt"]
    assert store.search("beetles", None, "bm25", 5) == []
    assert set(store.read_manifest()) == {"kb/alpha.md", "kb/faq.jsonl"}


async def test_new_chunking_parameters_reindex_everything(corpus, store, minilm_tokenizer):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer)
    embed = FakeEmbedder()

    report = await run(corpus, store, embed, minilm_tokenizer, chunk_tokens=32)

    assert report.updated_files == ["kb/alpha.md", "kb/beta.txt", "kb/faq.jsonl"]
    assert report.chunks_embedded == report.chunks_written == store.count()


async def test_new_embedder_reembeds_everything(corpus, store, minilm_tokenizer):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer, embedder_id="a")
    embed = FakeEmbedder()

    report = await run(corpus, store, embed, minilm_tokenizer, embedder_id="b")

    assert len(report.updated_files) == 3
    assert report.chunks_embedded == report.chunks_written


async def test_metadata_fields_become_filterable(corpus, store, minilm_tokenizer):
    embed = FakeEmbedder()
    await run(corpus, store, embed, minilm_tokenizer)
    (query,) = await embed(["default port"])

    hits = store.search("port", query, "hybrid", 5, {"team": "web"})

    assert [h.chunk_id for h in hits] == ["kb/faq.jsonl:p#0"]


async def test_store_and_index_must_agree_on_metadata_fields(corpus, store, minilm_tokenizer):
    with pytest.raises(ValueError, match="metadata fields"):
        await run(corpus, store, FakeEmbedder(), minilm_tokenizer, metadata_fields=["owner"])


async def test_lost_manifest_rebuilds_and_clears_stale_rows(corpus, store, minilm_tokenizer):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer)
    store._connection().drop_table(store.manifest_name)
    (corpus / "beta.txt").unlink()

    report = await run(corpus, store, FakeEmbedder(), minilm_tokenizer)

    assert report.added_files == ["kb/alpha.md", "kb/faq.jsonl"]
    assert report.removed_files == ["kb/beta.txt"]
    assert store.indexed_files() == {"kb/alpha.md", "kb/faq.jsonl"}


async def test_empty_corpus_creates_an_empty_index(tmp_path, store, minilm_tokenizer):
    (tmp_path / "empty").mkdir()

    report = await run(tmp_path / "empty", store, FakeEmbedder(), minilm_tokenizer)

    assert report.chunks_written == 0
    assert store.search("anything", [0.0] * DIM, "hybrid", 5) == []


async def test_embedder_returning_wrong_count_fails(corpus, store, minilm_tokenizer):
    async def broken(texts):
        return [[0.0] * DIM]

    with pytest.raises(RuntimeError, match="vectors for"):
        await run(corpus, store, broken, minilm_tokenizer)


async def test_progress_bars_do_not_break_indexing(corpus, store, minilm_tokenizer, capsys):
    report = await build_index(
        [str(corpus)], store, FakeEmbedder(), minilm_tokenizer, 64, 8, ["team"], progress=True
    )

    assert report.chunks_written > 0
    assert "embedding batches" in capsys.readouterr().err


def add_bad_files(corpus, outside):
    (corpus / "latin1.txt").write_bytes("café".encode("latin-1"))
    (corpus / "broken.jsonl").write_text('{"text": "fine"}\n{not json\n')
    (corpus / "big.md").write_text("# Big\n\n" + paragraph("giants", 200))
    outside.mkdir()
    (outside / "credentials").write_text("aws_secret_access_key = hunter2\n")
    (corpus / "creds.md").symlink_to(outside / "credentials")


async def test_bad_files_are_skipped_and_reported_while_the_rest_is_indexed(
    corpus, store, minilm_tokenizer, tmp_path
):
    add_bad_files(corpus, tmp_path / "home")

    big_size = (corpus / "big.md").stat().st_size

    report = await run(corpus, store, FakeEmbedder(), minilm_tokenizer, max_file_bytes=5000)

    assert big_size > 5000
    assert report.added_files == ["kb/alpha.md", "kb/beta.txt", "kb/faq.jsonl"]
    assert {s.source: s.message for s in report.skipped_files} == {
        "kb/big.md": f"kb/big.md: {big_size} bytes, more than max_file_bytes (5000)",
        "kb/broken.jsonl": "kb/broken.jsonl:2: invalid JSON: Expecting property name "
        "enclosed in double quotes",
        "kb/creds.md": "kb/creds.md: link to a file outside the corpus root",
        "kb/latin1.txt": "kb/latin1.txt: not UTF-8 text (byte 3: unexpected end of data)",
    }
    assert store.indexed_files() == set(store.read_manifest()) == set(report.added_files)
    assert store.search("hunter2", None, "bm25", 5) == []
    summary = report.summary()
    assert summary.splitlines()[1:] == [f"  skipped {s.message}" for s in report.skipped_files]
    assert "4 files skipped" in summary
    assert str(tmp_path) not in summary


async def test_skipped_files_are_not_recorded_so_the_next_run_retries_them(
    corpus, store, minilm_tokenizer, tmp_path
):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer)
    version = store.version
    add_bad_files(corpus, tmp_path / "home")

    again = await run(corpus, store, FakeEmbedder(), minilm_tokenizer, max_file_bytes=5000)

    assert not again.changed  # only new bad files: nothing to commit
    assert store.version == version
    assert len(again.skipped_files) == 4
    (corpus / "latin1.txt").write_text("café")

    fixed = await run(corpus, store, FakeEmbedder(), minilm_tokenizer, max_file_bytes=5000)

    assert fixed.added_files == ["kb/latin1.txt"]
    assert [s.source for s in fixed.skipped_files] == [
        "kb/big.md",
        "kb/broken.jsonl",
        "kb/creds.md",
    ]


async def test_an_indexed_file_that_turns_bad_loses_its_chunks(corpus, store, minilm_tokenizer):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer)
    (corpus / "faq.jsonl").write_text(
        '{"id": "p", "text": "Port 8000."}\n{"id": "p", "text": "x"}\n'
    )
    (corpus / "beta.txt").write_bytes(b"\xff beetles")

    report = await run(corpus, store, FakeEmbedder(), minilm_tokenizer)

    assert report.removed_files == ["kb/beta.txt", "kb/faq.jsonl"]
    assert report.updated_files == []
    assert [s.source for s in report.skipped_files] == ["kb/beta.txt", "kb/faq.jsonl"]
    assert store.indexed_files() == set(store.read_manifest()) == {"kb/alpha.md"}
    assert store.search("beetles", None, "bm25", 5) == []


async def test_an_indexed_file_over_a_lowered_size_cap_loses_its_chunks(
    corpus, store, minilm_tokenizer
):
    await run(corpus, store, FakeEmbedder(), minilm_tokenizer)

    report = await run(corpus, store, FakeEmbedder(), minilm_tokenizer, max_file_bytes=1000)

    assert report.removed_files == ["kb/alpha.md"]
    assert [s.source for s in report.skipped_files] == ["kb/alpha.md"]
    assert store.indexed_files() == set(store.read_manifest()) == {"kb/beta.txt", "kb/faq.jsonl"}
