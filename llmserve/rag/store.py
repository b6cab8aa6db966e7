"""LanceDB-backed storage and search for embedded chunks.

Two tables live under one LanceDB URI (a local folder or an object store such
as ``s3://bucket/path``):

* ``<table>``: one row per chunk: ids, text, the embedding, a JSON column with
  all document metadata, and one string column per *declared* metadata field
  so those can be filtered on. A native full-text (BM25) index covers ``text``.
* ``<table>_files``: the manifest, one row per corpus file (content SHA-256 and
  chunking parameters), which makes re-indexing incremental.

Readers are cheap and independent: every process (every Serve replica) opens
its own connection lazily and only reads. Writers commit new table versions;
readers pick them up through LanceDB's read-consistency interval, or at once
with :meth:`ChunkStore.refresh`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from llmserve.compat.lancedb import (
    DISTANCE_COLUMN,
    FTS_SCORE_COLUMN,
    RELEVANCE_COLUMN,
    is_missing_fts_index,
)
from llmserve.literals import SEARCH_MODES, SearchMode
from llmserve.rag.chunking import Chunk

#: Columns every chunk row has; metadata fields may not reuse these names.
CORE_COLUMNS = (
    "chunk_id", "file", "source", "title", "text",
    "content_hash", "chunk_index", "metadata", "vector",
)  # fmt: skip
#: Built-in columns callers may filter on, besides declared metadata fields.
BUILTIN_FILTER_FIELDS = ("source", "title")


def index_hint(pipeline: str = "NAME") -> str:
    """What to run when an index is missing: ``llmserve index`` for the pipeline that uses it."""
    return f"Build it with: llmserve index CONFIG --pipeline {pipeline}"


DEFAULT_NOT_BUILT_HINT = index_hint()

# Reciprocal-rank-fusion constant; 60 is the value from the original RRF paper
# and LanceDB's default.
RRF_K = 60

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class IndexNotBuilt(RuntimeError):
    """The chunk table does not exist (or is unusable) at the configured URI."""


class UnknownFilterField(ValueError):
    """A search filter names a field that is neither built-in nor a declared metadata field."""

    def __init__(self, field: str, allowed: Iterable[str]) -> None:
        self.field = field
        self.allowed = sorted(allowed)
        super().__init__(
            f"unknown filter field {field!r}; filterable fields are: {', '.join(self.allowed)}"
        )


class InvalidFilter(ValueError):
    """A search filter value has an unsupported type."""


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk. ``score`` is higher-is-better, its scale depends on the mode."""

    chunk_id: str
    source: str
    title: str
    text: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class FileRecord:
    """Manifest entry: what a corpus file looked like when its chunks were written."""

    file: str
    sha256: str
    params: str
    chunks: int = 0


def metadata_value_to_str(value: Any) -> str | None:
    """How a metadata value is stored in (and compared against) its string column."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def sql_string(value: Any) -> str:
    """A SQL string literal; the only escape LanceDB's SQL dialect needs is ``''``."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """Backtick-quote a column name, so mixed-case names keep their case."""
    if "`" in name:
        raise InvalidFilter(f"invalid column name {name!r}")
    return f"`{name}`"


def validate_metadata_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """Check declared metadata field names; each becomes a table column."""
    result = []
    for name in fields:
        if not _FIELD_NAME.match(name):
            raise ValueError(
                f"metadata field {name!r} must be a plain identifier (letters, digits, _)"
            )
        if name.lower() in CORE_COLUMNS:
            raise ValueError(f"metadata field {name!r} clashes with a built-in column")
        if name not in result:
            result.append(name)
    return tuple(result)


def build_where(filters: Mapping[str, Any] | None, allowed: Iterable[str]) -> str | None:
    """Translate ``{field: value | [values]}`` into a safe SQL predicate.

    A scalar means equality, a list/tuple/set means ``IN``, ``None`` means the
    field is unset; all clauses must hold. Values are compared as strings (see
    :func:`metadata_value_to_str`), so ``{"year": 2024}`` matches ``"2024"``.
    """
    if not filters:
        return None
    allowed = set(allowed)
    clauses = []
    for field, value in filters.items():
        if field not in allowed:
            raise UnknownFilterField(field, allowed)
        column = sql_identifier(field)
        if value is None:
            clauses.append(f"{column} IS NULL")
        elif isinstance(value, (list, tuple, set, frozenset)):
            literals = [_filter_literal(field, item) for item in value]
            # ``IN ()`` is not valid SQL; an empty choice can match nothing.
            clauses.append(f"{column} IN ({', '.join(literals)})" if literals else "FALSE")
        else:
            clauses.append(f"{column} = {_filter_literal(field, value)}")
    return " AND ".join(clauses)


def _filter_literal(field: str, value: Any) -> str:
    if not isinstance(value, (str, int, float, bool)):
        raise InvalidFilter(
            f"filter {field!r}: values must be strings, numbers or booleans, "
            f"got {type(value).__name__}"
        )
    return sql_string(metadata_value_to_str(value))


def chunk_schema(dim: int, metadata_fields: Sequence[str]) -> pa.Schema:
    """Arrow schema of the chunk table."""
    fields = [
        pa.field("chunk_id", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("text", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("chunk_index", pa.int32()),
        pa.field("metadata", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ]
    fields += [pa.field(name, pa.string()) for name in metadata_fields]
    return pa.schema(fields)


MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("params", pa.string()),
        pa.field("chunks", pa.int32()),
    ]
)


class ChunkStore:
    """Chunk table + file manifest in LanceDB, with dense, BM25 and hybrid search.

    Construct it anywhere (it connects lazily, and a pickled copy reconnects in
    its new process). ``metadata_fields`` are the declared filterable metadata
    keys; ``None`` means "whatever the existing table has" (read-only use).
    ``read_consistency_interval`` (seconds) bounds how stale a reader may be
    after another process re-indexes; ``0`` checks on every query, ``None``
    only on :meth:`refresh`. Each query reads one table version throughout.
    Hybrid search fuses at least ``hybrid_candidates`` results from each of
    its two searches, however small ``top_k`` is.
    """

    def __init__(
        self,
        uri: str | os.PathLike[str],
        table: str = "chunks",
        *,
        metadata_fields: Sequence[str] | None = None,
        not_built_hint: str = DEFAULT_NOT_BUILT_HINT,
        read_consistency_interval: float | None = 1.0,
        storage_options: Mapping[str, str] | None = None,
        hybrid_candidates: int = 20,
    ) -> None:
        self.uri = os.fspath(uri)
        self.table_name = table
        self.manifest_name = f"{table}_files"
        self.metadata_fields = (
            None if metadata_fields is None else validate_metadata_fields(metadata_fields)
        )
        self.not_built_hint = not_built_hint
        self.read_consistency_interval = read_consistency_interval
        self.storage_options = dict(storage_options or {})
        self.hybrid_candidates = hybrid_candidates
        self._lock = threading.Lock()
        self._reset()

    # -- connection handling ------------------------------------------------
    #
    # Two kinds of table handle: ``_latest`` follows the newest version and is
    # used for writes and version checks; ``_snapshot`` is checked out at one
    # version and serves queries. LanceDB runs a hybrid query's vector and
    # full-text legs in parallel, and a handle that refreshes itself could let
    # them read different versions in the middle of a re-index (fusing old and
    # new rows). A pinned snapshot gives every query one consistent version; it
    # is swapped for a newer one at most every ``read_consistency_interval``.

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._db: Any = None
        self._latest: Any = None
        self._snapshot: Any = None
        self._snapshot_version: int | None = None
        self._checked_at: float | None = None  # None: check before the next read

    def __getstate__(self) -> dict[str, Any]:
        # Connections don't cross processes: a copy sent to a Ray actor reconnects.
        state = self.__dict__.copy()
        for key in ("_lock", "_db", "_latest", "_snapshot"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._reset()

    def _connection(self) -> Any:
        if self._db is None or self._pid != os.getpid():
            import lancedb  # deferred: importing lancedb is slow and only needed on use

            self._reset()
            # No automatic refresh: freshness is managed by the snapshot logic above.
            self._db = lancedb.connect(self.uri, storage_options=self.storage_options or None)
        return self._db

    def _table_names(self) -> list[str]:
        db = self._connection()
        names: list[str] = []
        page_token = None
        while True:
            response = db.list_tables(page_token=page_token)
            names.extend(response.tables)
            page_token = response.page_token
            if not page_token:
                return names

    def _latest_locked(self) -> Any:
        db = self._connection()
        if self._latest is None:
            if self.table_name not in self._table_names():
                raise IndexNotBuilt(
                    f"RAG index table {self.table_name!r} not found at {self.uri!r}. "
                    f"{self.not_built_hint}"
                )
            self._latest = db.open_table(self.table_name)
        return self._latest

    def _open(self) -> Any:
        """The chunk table at its newest version; raises :class:`IndexNotBuilt`."""
        with self._lock:
            table = self._latest_locked()
            table.checkout_latest()
            return table

    def _reader(self) -> Any:
        """A handle pinned to one table version, for queries (see the note above)."""
        with self._lock:
            self._connection()  # resets all handles after a fork
            interval = self.read_consistency_interval
            now = time.monotonic()
            due = self._checked_at is None or (
                interval is not None and now - self._checked_at >= interval
            )
            if self._snapshot is None or due:
                latest = self._latest_locked()
                latest.checkout_latest()
                version = latest.version
                if self._snapshot is None or version != self._snapshot_version:
                    snapshot = self._connection().open_table(self.table_name)
                    snapshot.checkout(version)
                    self._snapshot, self._snapshot_version = snapshot, version
                self._checked_at = now
            return self._snapshot

    def _written(self) -> None:
        """After a write, this store's own next read must see it."""
        self._checked_at = None

    def exists(self) -> bool:
        """Whether the chunk table has been created."""
        with self._lock:
            return self.table_name in self._table_names()

    def refresh(self) -> None:
        """Look for a newer table version before the next query (e.g. after a re-index)."""
        self._checked_at = None

    @property
    def version(self) -> int | None:
        """Newest version of the chunk table, ``None`` if it does not exist yet."""
        try:
            return self._open().version
        except IndexNotBuilt:
            return None

    def count(self) -> int:
        """Number of chunks, as the next query would see them."""
        return self._reader().count_rows()

    # -- search -------------------------------------------------------------

    def filter_fields(self) -> tuple[str, ...]:
        """Fields that :meth:`search` accepts in ``filters``."""
        return BUILTIN_FILTER_FIELDS + self._metadata_columns()

    def _metadata_columns(self) -> tuple[str, ...]:
        if self.metadata_fields is not None:
            return self.metadata_fields
        names = self._reader().schema.names
        return tuple(name for name in names if name not in CORE_COLUMNS)

    def search(
        self,
        query_text: str,
        query_vector: Sequence[float] | None,
        mode: SearchMode = "hybrid",
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Return up to ``top_k`` chunks for a query, best first.

        * ``dense``: cosine similarity of ``query_vector`` (score = similarity).
        * ``bm25``: LanceDB's native full-text index over ``text`` (score = BM25).
        * ``hybrid``: both, fused by LanceDB's reciprocal-rank-fusion reranker
          (score = fused RRF score). A query with no text falls back to dense.
        """
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; expected one of {SEARCH_MODES}")
        text = query_text.strip()
        if mode != "bm25" and query_vector is None and text:
            raise ValueError(f"{mode} search needs a query vector")
        # Validate filters before touching the table: a bad request is a bad
        # request even while the index is missing.
        where = build_where(filters, self.filter_fields())
        table = self._reader()
        self._check_columns(table, filters)
        if mode == "hybrid" and not text:
            mode = "dense"
        if top_k <= 0 or (not text and query_vector is None):
            return []  # nothing to search for
        if mode == "bm25" and not text:
            return []
        try:
            rows = self._run_query(table, text, query_vector, mode, top_k, where)
        except ValueError as exc:
            if not is_missing_fts_index(exc):
                raise
            # Only an empty table legitimately lacks the full-text index.
            if table.count_rows() == 0:
                return []
            raise IndexNotBuilt(
                f"RAG index {self.table_name!r} at {self.uri!r} has no full-text index. "
                f"{self.not_built_hint}"
            ) from exc
        return [self._to_hit(row, mode) for row in rows]

    async def asearch(
        self,
        query_text: str,
        query_vector: Sequence[float] | None,
        mode: SearchMode = "hybrid",
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """:meth:`search` on a worker thread, for use inside an event loop."""
        return await asyncio.to_thread(self.search, query_text, query_vector, mode, top_k, filters)

    def _check_columns(self, table: Any, filters: Mapping[str, Any] | None) -> None:
        """Declared fields missing from the table mean the index predates the config."""
        if not filters:
            return
        missing = [name for name in filters if name not in table.schema.names]
        if missing:
            raise IndexNotBuilt(
                f"RAG index {self.table_name!r} was built without metadata field(s) "
                f"{', '.join(missing)}; re-index it. {self.not_built_hint}"
            )

    def _run_query(
        self,
        table: Any,
        text: str,
        vector: Sequence[float] | None,
        mode: str,
        top_k: int,
        where: str | None,
    ) -> list[dict[str, Any]]:
        # Hybrid legs can't name their score columns (each leg only has one of
        # them), so hybrid selects everything and drops the vector afterwards.
        columns = [name for name in table.schema.names if name != "vector"]
        # Dense and hybrid search need the query vector; bm25 does not.
        query_vector = list(vector) if vector is not None else None
        if mode != "bm25" and query_vector is None:
            raise ValueError(f"{mode} search needs a query vector")
        if mode == "dense":
            query = (
                table.search(query_vector, vector_column_name="vector", query_type="vector")
                .distance_type("cosine")
                .select([*columns, DISTANCE_COLUMN])
            )
        elif mode == "bm25":
            query = table.search(text, query_type="fts", fts_columns="text").select(
                [*columns, FTS_SCORE_COLUMN]
            )
        else:
            from lancedb.rerankers import RRFReranker

            query = (
                table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
                .vector(query_vector)
                .text(text)
                .distance_type("cosine")
                .rerank(RRFReranker(K=RRF_K))
            )
        if where:
            query = query.where(where, prefilter=True)
        if mode == "hybrid":
            # LanceDB limits each leg to the final limit. Fusing only the top 1-5
            # of each list would rank by little more than a coin toss, so fetch
            # more candidates per leg and cut after fusion.
            query = query.limit(max(top_k, self.hybrid_candidates))
            rows = query.to_arrow().drop_columns(["vector"]).slice(0, top_k)
            return rows.to_pylist()
        return query.limit(top_k).to_list()

    @staticmethod
    def _to_hit(row: Mapping[str, Any], mode: str) -> Hit:
        if mode == "dense":
            score = 1.0 - float(row[DISTANCE_COLUMN])
        elif mode == "bm25":
            score = float(row[FTS_SCORE_COLUMN])
        else:
            score = float(row[RELEVANCE_COLUMN])
        return Hit(
            chunk_id=row["chunk_id"],
            source=row["source"],
            title=row["title"] or "",
            text=row["text"] or "",
            score=score,
            metadata=json.loads(row["metadata"]) if row.get("metadata") else {},
        )

    # -- writing (used by the indexer) ----------------------------------------

    def read_manifest(self) -> dict[str, FileRecord] | None:
        """Manifest entries by file; ``None`` when there is no manifest table."""
        with self._lock:
            if self.manifest_name not in self._table_names():
                return None
            table = self._connection().open_table(self.manifest_name)
        table.checkout_latest()
        return {
            row["file"]: FileRecord(row["file"], row["sha256"], row["params"], row["chunks"])
            for row in table.to_arrow().to_pylist()
        }

    def write_manifest(self, records: Iterable[FileRecord]) -> None:
        """Replace the manifest with ``records`` (one small, atomic overwrite)."""
        rows = [
            {"file": r.file, "sha256": r.sha256, "params": r.params, "chunks": r.chunks}
            for r in sorted(records, key=lambda r: r.file)
        ]
        data = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        with self._lock:
            # "overwrite" on a missing table works but logs a warning; say what we mean.
            mode = "overwrite" if self.manifest_name in self._table_names() else "create"
            self._connection().create_table(self.manifest_name, data=data, mode=mode)

    def indexed_files(self) -> set[str]:
        """Distinct ``file`` values in the chunk table (a full column scan)."""
        column = self._open().search().select(["file"]).limit(None).to_arrow().column("file")
        return set(column.to_pylist())

    def vectors_by_hash(self, files: Iterable[str]) -> dict[str, list[float]]:
        """Stored embeddings of the chunks of ``files``, keyed by content hash."""
        files = sorted(set(files))
        if not files:
            return {}
        where = f"`file` IN ({', '.join(sql_string(f) for f in files)})"
        table = self._open()
        rows = table.search().where(where).select(["content_hash", "vector"]).limit(None)
        data = rows.to_arrow()
        hashes, vectors = data.column("content_hash"), data.column("vector")
        return dict(zip(hashes.to_pylist(), vectors.to_pylist(), strict=True))

    def ensure_table(self, dim: int) -> bool:
        """Create the chunk table if needed; returns True when it was (re)created.

        An existing table whose schema differs (new embedding size, different
        metadata fields) is overwritten in place as a new version, so running
        readers keep working and simply see an empty index until it is refilled.
        """
        if self.metadata_fields is None:
            raise ValueError("writing requires metadata_fields to be declared (may be empty)")
        schema = chunk_schema(dim, self.metadata_fields)
        with self._lock:
            db = self._connection()
            exists = self.table_name in self._table_names()
            if exists:
                table = db.open_table(self.table_name)
                if table.schema.equals(schema):
                    self._latest = table
                    return False
            mode = "overwrite" if exists else "create"
            self._latest = db.create_table(self.table_name, schema=schema, mode=mode)
            self._written()
            return True

    def rows_for(self, chunks: Sequence[Chunk], vectors: Sequence[Sequence[float]]) -> pa.Table:
        """Arrow rows for chunks and their embeddings, in the table's schema."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        schema = self._open().schema
        fields = self.metadata_fields or ()
        rows = []
        for chunk, vector in zip(chunks, vectors, strict=True):
            row = {
                "chunk_id": chunk.chunk_id,
                "file": chunk.file or chunk.source,
                "source": chunk.source,
                "title": chunk.title,
                "text": chunk.text,
                "content_hash": chunk.content_hash,
                "chunk_index": chunk.index,
                "metadata": json.dumps(chunk.metadata, sort_keys=True, ensure_ascii=False),
                "vector": [float(x) for x in vector],
            }
            for name in fields:
                row[name] = metadata_value_to_str(chunk.metadata.get(name))
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema)

    def replace_files(self, files: Iterable[str], rows: pa.Table | None) -> None:
        """Atomically drop all chunks of ``files`` and insert ``rows``.

        One commit (a merge-insert keyed on ``chunk_id`` whose "not matched by
        source" side deletes the files' old chunks), so a concurrent reader sees
        either the old or the new chunks of a file, never neither.
        """
        files = sorted(set(files))
        table = self._open()
        in_files = f"`file` IN ({', '.join(sql_string(f) for f in files)})" if files else None
        if rows is None or rows.num_rows == 0:
            if in_files:
                table.delete(in_files)
        elif not in_files:
            table.add(rows)
        else:
            (
                table.merge_insert("chunk_id")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete(in_files)
                .execute(rows)
            )
        self._written()

    def compact(self) -> None:
        """Merge the small data files that incremental updates leave behind.

        Also prunes versions older than LanceDB's default of 7 days, far longer
        than any reader keeps a pinned snapshot.
        """
        self._open().optimize()
        self._written()

    def rebuild_fts_index(self) -> None:
        """(Re)build the BM25 index on ``text``; a no-op on an empty table."""
        from lancedb.index import FTS

        table = self._open()
        if table.count_rows() == 0:
            return
        # Same as the deprecated ``create_fts_index("text", replace=True)``:
        # English stemming, stop-word removal, lower-casing, ASCII folding.
        table.create_index("text", config=FTS(), replace=True)
        self._written()
