"""Canaries for the LanceDB behaviour in llmserve/compat/lancedb.py, on real tables.

Each test fails when LanceDB changes what the chunk store relies on; the tests
named ``..._can_fail`` show that the check behind a canary reports such a change.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from llmserve.compat.lancedb import (
    DISTANCE_COLUMN,
    FTS_SCORE_COLUMN,
    RELEVANCE_COLUMN,
    is_missing_fts_index,
)
from llmserve.rag.chunking import Chunk
from llmserve.rag.store import ChunkStore, IndexNotBuilt

pytestmark = pytest.mark.unit

SCHEMA = pa.schema([pa.field("text", pa.string()), pa.field("vector", pa.list_(pa.float32(), 2))])
ROWS = [
    {"text": "kangaroo habitat", "vector": [1.0, 0.0]},
    {"text": "engines and caches", "vector": [0.0, 1.0]},
]


@pytest.fixture
def table(tmp_path):
    import lancedb
    from lancedb.index import FTS

    table = lancedb.connect(tmp_path).create_table("t", data=pa.Table.from_pylist(ROWS, SCHEMA))
    table.create_index("text", config=FTS())
    return table


def test_each_query_kind_reports_its_score_column(table) -> None:
    from lancedb.rerankers import RRFReranker

    dense = table.search([1.0, 0.0], vector_column_name="vector", query_type="vector")
    assert DISTANCE_COLUMN in dense.distance_type("cosine").limit(2).to_arrow().column_names
    bm25 = table.search("kangaroo", query_type="fts", fts_columns="text")
    assert FTS_SCORE_COLUMN in bm25.limit(2).to_arrow().column_names
    hybrid = (
        table.search(query_type="hybrid", vector_column_name="vector", fts_columns="text")
        .vector([1.0, 0.0])
        .text("kangaroo")
        .distance_type("cosine")
        .rerank(RRFReranker())
    )
    assert RELEVANCE_COLUMN in hybrid.limit(2).to_arrow().column_names


def _store_without_fts_index(tmp_path) -> ChunkStore:
    store = ChunkStore(tmp_path / "db", metadata_fields=[])
    store.ensure_table(dim=2)
    chunk = Chunk("a#0", "a", "A", "kangaroo habitat", {}, "h-a", 0, "a")
    store.replace_files(["a"], store.rows_for([chunk], [[1.0, 0.0]]))
    return store  # no rebuild_fts_index()


@pytest.mark.parametrize("mode", ["bm25", "hybrid"])
def test_a_table_without_its_fts_index_is_searched_or_reported_as_not_built(tmp_path, mode) -> None:
    """Any other error would reach the client as a 500."""
    store = _store_without_fts_index(tmp_path)
    try:
        hits = store.search("kangaroo", [1.0, 0.0], mode, 5)
    except IndexNotBuilt:
        return
    # LanceDB 0.40 searches the unindexed column.
    assert [hit.source for hit in hits] == ["a"]


def _fail_fts_queries(monkeypatch, message: str) -> None:
    from lancedb.query import LanceFtsQueryBuilder

    def fail(*args, **kwargs):
        raise ValueError(message)

    monkeypatch.setattr(LanceFtsQueryBuilder, "to_list", fail)


def test_the_error_text_llmserve_knows_becomes_index_not_built(tmp_path, monkeypatch) -> None:
    _fail_fts_queries(monkeypatch, "Cannot perform full text search unless an INVERTED index")
    with pytest.raises(IndexNotBuilt, match="has no full-text index"):
        _store_without_fts_index(tmp_path).search("kangaroo", None, "bm25", 5)


def test_the_missing_index_check_can_fail(tmp_path, monkeypatch) -> None:
    """A LanceDB that words the error differently leaks it: the canary above fails then."""
    _fail_fts_queries(monkeypatch, "no full-text index on column text")
    with pytest.raises(ValueError) as info:
        _store_without_fts_index(tmp_path).search("kangaroo", None, "bm25", 5)
    assert not isinstance(info.value, IndexNotBuilt)
    assert not is_missing_fts_index(info.value)
