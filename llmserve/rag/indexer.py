"""Incremental indexing: corpus files → chunks → embeddings → :class:`ChunkStore`.

Each corpus file is fingerprinted (SHA-256 of its bytes plus the chunking
parameters) in the store's manifest. A run only chunks and embeds files that are
new or changed, drops the chunks of files that disappeared, and commits nothing
at all when the corpus is unchanged, so re-running ``llmserve index`` is cheap
and leaves the table version alone. Files that cannot be indexed are skipped and
reported, not fatal (see :func:`build_index`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from llmserve.rag.chunking import Chunk, OffsetTokenizer, chunk_documents, embedding_text
from llmserve.rag.discovery import SkippedFile, SourceFile, discover_files, read_source_file
from llmserve.rag.documents import DEFAULT_MAX_FILE_BYTES, DocumentLoadError, parse_documents
from llmserve.rag.store import ChunkStore, FileRecord, validate_metadata_fields

EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]


@dataclass
class IndexReport:
    """What one indexing run did; file lists hold corpus sources, sorted.

    ``skipped_files`` are the files left out of the index (see
    :func:`build_index`); they have no rows and no manifest entry.
    """

    added_files: list[str] = field(default_factory=list)
    updated_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    unchanged_files: list[str] = field(default_factory=list)
    skipped_files: list[SkippedFile] = field(default_factory=list)
    chunks_written: int = 0
    chunks_embedded: int = 0
    table_version: int | None = None

    @property
    def changed(self) -> bool:
        """Whether the run modified the index."""
        return bool(self.added_files or self.updated_files or self.removed_files)

    def summary(self) -> str:
        """CLI output: one line, then one line per skipped file (by source, with the reason)."""
        line = (
            f"{len(self.added_files)} added, {len(self.updated_files)} updated, "
            f"{len(self.removed_files)} removed, {len(self.unchanged_files)} unchanged files; "
            f"{self.chunks_written} chunks written ({self.chunks_embedded} embedded)"
        )
        if not self.skipped_files:
            return line
        skipped = [f"  skipped {s.message}" for s in self.skipped_files]
        return "\n".join([f"{line}; {len(self.skipped_files)} files skipped:", *skipped])


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
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> IndexReport:
    """Bring ``store`` in line with the files under ``paths``.

    ``embed`` maps a batch of texts to their vectors (e.g. a call to the
    embedder deployment). ``embedder_id`` is recorded in the manifest, so
    switching embedding models re-embeds everything. Chunks of edited files
    whose text did not change keep their stored vectors instead of being
    embedded again.

    One bad file does not stop the run: a file that discovery skips (a link
    leaving the corpus, over ``max_file_bytes``, ...) or that cannot be read or
    parsed (not UTF-8, a bad JSON line, ...) is listed in the report's
    ``skipped_files`` and the rest is indexed. A skipped file is never recorded
    as indexed, so it is retried on the next run. A file indexed before and
    skipped now loses its chunks and is also listed as removed: the index holds
    only what the corpus holds now, not a stale copy. What still raises:
    configuration mistakes from :func:`discover_files` (a path that does not
    exist, a glob matching nothing, an explicitly named unsupported file), a
    store declared with other metadata fields, and embedder failures.
    """
    fields = validate_metadata_fields(metadata_fields)
    if store.metadata_fields is None:
        store.metadata_fields = fields
    elif tuple(store.metadata_fields) != fields:
        raise ValueError(
            f"store declares metadata fields {store.metadata_fields}, indexing uses {fields}"
        )
    params = chunking_params(chunk_tokens, chunk_overlap_tokens, fields, embedder_id)

    corpus = discover_files(paths, max_file_bytes=max_file_bytes)
    skipped = {s.source: s for s in corpus.skipped}
    by_source = {f.source: f for f in corpus.files}
    hashes: dict[str, str] = {}
    for source_file in corpus.files:
        try:
            data = read_source_file(source_file, max_file_bytes)
        except DocumentLoadError as exc:
            skipped[source_file.source] = SkippedFile(source_file.source, str(exc))
        else:
            hashes[source_file.source] = hashlib.sha256(data).hexdigest()
    table_exists = store.exists()
    manifest = store.read_manifest() if table_exists else None
    report = IndexReport()
    if manifest is None:
        # No usable manifest: index everything, and clear rows of files we
        # can no longer account for.
        report.added_files = sorted(hashes)
        indexed = store.indexed_files() if table_exists else set()
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
        indexed = set(manifest)
    report.removed_files = sorted(indexed - set(hashes))

    def load(sources: list[str]) -> list[Chunk]:
        """Chunks of ``sources``; the ones that fail to load become skipped (and removed)."""
        loaded = _load_chunks([by_source[s] for s in sources], tokenizer, chunk_tokens,
                              chunk_overlap_tokens, max_file_bytes, progress)  # fmt: skip
        # The manifest records the bytes actually chunked, should a file change meanwhile.
        hashes.update(loaded.hashes)
        for failed in loaded.failed:
            skipped[failed.source] = failed
            del hashes[failed.source]
            for listed in (report.added_files, report.updated_files):
                if failed.source in listed:
                    listed.remove(failed.source)
            if failed.source in indexed:
                report.removed_files = sorted({*report.removed_files, failed.source})
        return loaded.chunks

    chunks = load(report.added_files + report.updated_files)
    report.skipped_files = [skipped[s] for s in sorted(skipped)]
    if not report.changed and table_exists:
        report.table_version = store.version
        return report

    # Vectors can be reused only for files indexed with the same parameters
    # (same embedder): their unchanged chunks have identical embedding input.
    reusable = [s for s in report.updated_files if manifest[s].params == params]
    known_vectors = store.vectors_by_hash(reusable) if reusable else {}
    vectors, embedded = await _embed_chunks(chunks, known_vectors, embed, batch_size, progress)
    report.chunks_embedded = embedded

    dim = len(vectors[0]) if vectors else await _probe_dimension(embed)
    if store.ensure_table(dim) and report.unchanged_files:
        # The table had to be recreated (e.g. a different embedding size):
        # files that looked unchanged have lost their rows too.
        report.added_files = sorted(report.added_files + report.unchanged_files)
        extra, report.unchanged_files = report.unchanged_files, []
        more = load(extra)
        report.skipped_files = [skipped[s] for s in sorted(skipped)]
        more_vectors, more_embedded = await _embed_chunks(more, {}, embed, batch_size, progress)
        chunks, vectors = chunks + more, vectors + more_vectors
        report.chunks_embedded += more_embedded

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


@dataclass
class _Loaded:
    """Chunks of the files that loaded, the SHA-256 of their bytes, and those that failed."""

    chunks: list[Chunk] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    failed: list[SkippedFile] = field(default_factory=list)


def _load_chunks(
    files: Sequence[SourceFile],
    tokenizer: OffsetTokenizer,
    chunk_tokens: int,
    chunk_overlap_tokens: int,
    max_file_bytes: int,
    progress: bool,
) -> _Loaded:
    loaded = _Loaded()
    for source_file in tqdm(files, desc="chunking files", unit="file", disable=not progress):
        try:
            data = read_source_file(source_file, max_file_bytes)
            documents = parse_documents(data, source_file.path, source_file.source)
        except DocumentLoadError as exc:
            loaded.failed.append(SkippedFile(source_file.source, str(exc)))
            continue
        loaded.hashes[source_file.source] = hashlib.sha256(data).hexdigest()
        loaded.chunks.extend(
            chunk_documents(documents, tokenizer, chunk_tokens, chunk_overlap_tokens)
        )
    return loaded


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
