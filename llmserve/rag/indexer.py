"""Incremental indexing: corpus files → chunks → embeddings → :class:`ChunkStore`.

Each corpus file is fingerprinted (SHA-256 of its bytes plus the chunking
parameters) in the store's manifest. A run only chunks and embeds files that are
new or changed, drops the chunks of files that disappeared, and commits nothing
at all when the corpus is unchanged, so re-running ``llmserve index`` is cheap
and leaves the table version alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from llmserve.rag.chunking import Chunk, OffsetTokenizer, chunk_documents, embedding_text
from llmserve.rag.documents import SourceFile, discover_files, load_file
from llmserve.rag.store import ChunkStore, FileRecord, validate_metadata_fields

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]


@dataclass
class IndexReport:
    """What one indexing run did; file lists hold corpus sources, sorted."""

    added_files: list[str] = field(default_factory=list)
    updated_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    unchanged_files: list[str] = field(default_factory=list)
    chunks_written: int = 0
    chunks_embedded: int = 0
    table_version: int | None = None

    @property
    def changed(self) -> bool:
        """Whether the run modified the index."""
        return bool(self.added_files or self.updated_files or self.removed_files)

    def summary(self) -> str:
        """One line for CLI output."""
        return (
            f"{len(self.added_files)} added, {len(self.updated_files)} updated, "
            f"{len(self.removed_files)} removed, {len(self.unchanged_files)} unchanged files; "
            f"{self.chunks_written} chunks written ({self.chunks_embedded} embedded)"
        )


def chunking_params(
    chunk_tokens: int,
    chunk_overlap_tokens: int,
    metadata_fields: Sequence[str],
    embedder_id: str | None = None,
) -> str:
    """Canonical JSON of everything besides file content that shapes a file's rows."""
    return json.dumps(
        {
            "chunk_tokens": chunk_tokens,
            "chunk_overlap_tokens": chunk_overlap_tokens,
            "metadata_fields": list(metadata_fields),
            "embedder": embedder_id,
        },
        sort_keys=True,
    )


def file_sha256(path: Any) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


async def build_index(
    paths: Iterable[str],
    store: ChunkStore,
    embed: EmbedFn,
    tokenizer: OffsetTokenizer,
    chunk_tokens: int = 200,
    chunk_overlap_tokens: int = 40,
    metadata_fields: Sequence[str] = (),
    progress: bool = True,
    batch_size: int = 64,
    *,
    embedder_id: str | None = None,
) -> IndexReport:
    """Bring ``store`` in line with the files under ``paths``.

    ``embed`` maps a batch of texts to their vectors (e.g. a call to the
    embedder deployment). ``embedder_id`` is recorded in the manifest, so
    switching embedding models re-embeds everything. Chunks of edited files
    whose text did not change keep their stored vectors instead of being
    embedded again.
    """
    fields = validate_metadata_fields(metadata_fields)
    if store.metadata_fields is None:
        store.metadata_fields = fields
    elif tuple(store.metadata_fields) != fields:
        raise ValueError(
            f"store declares metadata fields {store.metadata_fields}, indexing uses {fields}"
        )
    params = chunking_params(chunk_tokens, chunk_overlap_tokens, fields, embedder_id)

    files = discover_files(paths)
    hashes = {f.source: file_sha256(f.path) for f in files}
    table_exists = store.exists()
    manifest = store.read_manifest() if table_exists else None
    report = IndexReport()
    if manifest is None:
        # No usable manifest: index everything, and clear rows of files we
        # can no longer account for.
        report.added_files = sorted(hashes)
        stale = store.indexed_files() if table_exists else set()
        report.removed_files = sorted(stale - set(hashes))
        manifest = {}
    else:
        for source, sha in sorted(hashes.items()):
            old = manifest.get(source)
            if old is None:
                report.added_files.append(source)
            elif old.sha256 != sha or old.params != params:
                report.updated_files.append(source)
            else:
                report.unchanged_files.append(source)
        report.removed_files = sorted(set(manifest) - set(hashes))

    if not report.changed and table_exists:
        report.table_version = store.version
        return report

    by_source = {f.source: f for f in files}
    to_index = report.added_files + report.updated_files
    # Vectors can be reused only for files indexed with the same parameters
    # (same embedder): their unchanged chunks have identical embedding input.
    reusable = [s for s in report.updated_files if manifest[s].params == params]
    known_vectors = store.vectors_by_hash(reusable) if reusable else {}

    chunks = _chunk_files([by_source[s] for s in to_index], tokenizer, chunk_tokens,
                          chunk_overlap_tokens, progress)  # fmt: skip
    vectors, embedded = await _embed_chunks(chunks, known_vectors, embed, batch_size, progress)
    report.chunks_embedded = embedded

    dim = len(vectors[0]) if vectors else await _probe_dimension(embed)
    if store.ensure_table(dim) and report.unchanged_files:
        # The table had to be recreated (e.g. a different embedding size):
        # files that looked unchanged have lost their rows too.
        extra = [by_source[s] for s in report.unchanged_files]
        more = _chunk_files(extra, tokenizer, chunk_tokens, chunk_overlap_tokens, progress)
        more_vectors, more_embedded = await _embed_chunks(more, {}, embed, batch_size, progress)
        chunks, vectors = chunks + more, vectors + more_vectors
        report.chunks_embedded += more_embedded
        report.added_files = sorted(report.added_files + report.unchanged_files)
        report.unchanged_files = []

    touched = report.added_files + report.updated_files + report.removed_files
    rows = store.rows_for(chunks, vectors) if chunks else None
    store.replace_files(touched, rows)
    store.compact()
    store.rebuild_fts_index()
    report.chunks_written = len(chunks)

    counts: dict[str, int] = {}
    for chunk in chunks:
        counts[chunk.file] = counts.get(chunk.file, 0) + 1
    records = [
        manifest[s]
        if s in report.unchanged_files
        else FileRecord(file=s, sha256=hashes[s], params=params, chunks=counts.get(s, 0))
        for s in sorted(hashes)
    ]
    store.write_manifest(records)
    report.table_version = store.version
    return report


def _chunk_files(
    files: Sequence[SourceFile],
    tokenizer: OffsetTokenizer,
    chunk_tokens: int,
    chunk_overlap_tokens: int,
    progress: bool,
) -> list[Chunk]:
    chunks: list[Chunk] = []
    for source_file in tqdm(files, desc="chunking files", unit="file", disable=not progress):
        documents = load_file(source_file.path, source_file.source)
        chunks.extend(chunk_documents(documents, tokenizer, chunk_tokens, chunk_overlap_tokens))
    return chunks


async def _embed_chunks(
    chunks: Sequence[Chunk],
    known: dict[str, list[float]],
    embed: EmbedFn,
    batch_size: int,
    progress: bool,
) -> tuple[list[list[float]], int]:
    """Vectors for ``chunks`` in order, embedding only those not in ``known``."""
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    vectors: list[list[float] | None] = [known.get(c.content_hash) for c in chunks]
    missing = [i for i, v in enumerate(vectors) if v is None]
    batches = [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]
    for batch in tqdm(batches, desc="embedding batches", unit="batch", disable=not progress):
        texts = [embedding_text(chunks[i].title, chunks[i].text) for i in batch]
        result = await embed(texts)
        if len(result) != len(batch):
            raise RuntimeError(f"embedder returned {len(result)} vectors for {len(batch)} texts")
        for i, vector in zip(batch, result, strict=True):
            vectors[i] = list(vector)
    return vectors, len(missing)  # type: ignore[return-value]


async def _probe_dimension(embed: EmbedFn) -> int:
    """Embedding size, for creating an (empty) table when there is nothing to embed."""
    (vector,) = await embed(["dimension probe"])
    return len(vector)
