"""ChunkStore on real LanceDB with hand-made vectors: filters, search modes, readers."""

from __future__ import annotations

import pickle

import pytest

from llmserve.literals import SEARCH_MODES
from llmserve.rag.chunking import Chunk
from llmserve.rag.store import (
    ChunkStore,
    IndexNotBuilt,
    InvalidFilter,
    UnknownFilterField,
    build_where,
    index_hint,
    validate_metadata_fields,
)

pytestmark = pytest.mark.unit

ALLOWED = ("source", "title", "author", "year")

# Query vector and chunks designed so the two rankings disagree:
#   dense (cosine to QUERY):  engines, kangaroo-facts, caches, kangaroo-habitat
#   bm25 ("kangaroo"):        kangaroo-habitat, kangaroo-facts
# RRF (k=60): facts 1/62+1/62 > habitat 1/64+1/61 > engines 1/61 > caches 1/63.
QUERY = [1.0, 0.0, 0.0, 0.0]
ROWS = [
    ("a.md", "Engines", "completely unrelated text about engines", [1, 0, 0, 0], "Ann", 2023),
    ("b.md", "Habitat", "kangaroo kangaroo kangaroo habitat", [0, 1, 0, 0], "O'Brien", 2024),
    ("c.md", "Facts", "kangaroo facts and other animals", [0.9, 0.436, 0, 0], "Bo", 2024),
    ("d.md", "Caches", "another unrelated text about caches", [0.5, 0.866, 0, 0], None, 2022),
]  # fmt: skip


def make_chunks() -> tuple[list[Chunk], list[list[float]]]:
    chunks, vectors = [], []
    for source, title, text, vector, author, year in ROWS:
        metadata = {"year": year} if author is None else {"author": author, "year": year}
        chunks.append(Chunk(f"{source}#0", source, title, text, metadata, f"h-{source}", 0, source))
        vectors.append(vector)
    return chunks, vectors


@pytest.fixture
def store(tmp_path) -> ChunkStore:
    store = ChunkStore(tmp_path / "db", "chunks", metadata_fields=["author", "year"])
    chunks, vectors = make_chunks()
    store.ensure_table(dim=4)
    store.replace_files([c.file for c in chunks], store.rows_for(chunks, vectors))
    store.rebuild_fts_index()
    return store


def ids(hits) -> list[str]:
    return [hit.source for hit in hits]


# -- filters -----------------------------------------------------------------


def test_where_clause_equality_in_and_null():
    where = build_where({"author": "Ann", "year": [2023, 2024], "title": None}, ALLOWED)

    assert where == "`author` = 'Ann' AND `year` IN ('2023', '2024') AND `title` IS NULL"


def test_where_clause_escapes_quotes():
    where = build_where({"author": "x' OR '1'='1", "source": ["O'Brien\\"]}, ALLOWED)

    assert where == "`author` = 'x'' OR ''1''=''1' AND `source` IN ('O''Brien\\')"


def test_where_clause_values_compare_as_strings():
    assert build_where({"year": True}, ALLOWED) == "`year` = 'true'"
    assert build_where({"year": 1.5}, ALLOWED) == "`year` = '1.5'"
    assert build_where({"year": []}, ALLOWED) == "FALSE"
    assert build_where({}, ALLOWED) is None


def test_unknown_filter_field_is_a_specific_error():
    with pytest.raises(UnknownFilterField) as excinfo:
        build_where({"text": "x"}, ALLOWED)

    assert excinfo.value.field == "text"
    assert "'text'" in str(excinfo.value) and "author" in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("value", [{"a": 1}, [["nested"]], object()])
def test_unsupported_filter_values_are_rejected(value):
    with pytest.raises(InvalidFilter):
        build_where({"author": value}, ALLOWED)


@pytest.mark.parametrize("name", ["text", "Vector", "has space", "1st", "a-b", "a`b"])
def test_bad_metadata_field_names_are_rejected(name):
    with pytest.raises(ValueError):
        validate_metadata_fields([name])


# -- searching -----------------------------------------------------------------


def test_dense_ranks_by_cosine_similarity(store):
    hits = store.search("ignored", QUERY, "dense", 4)

    assert ids(hits) == ["a.md", "c.md", "d.md", "b.md"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score == pytest.approx(0.9, abs=1e-3)


def test_bm25_ranks_by_keywords(store):
    hits = store.search("kangaroo", None, "bm25", 4)

    assert ids(hits) == ["b.md", "c.md"]
    assert hits[0].score > hits[1].score > 0


def test_hybrid_fuses_both_rankings_with_rrf(store):
    hits = store.search("kangaroo", QUERY, "hybrid", 4)

    assert ids(hits) == ["c.md", "b.md", "a.md", "d.md"]
    assert hits[0].score == pytest.approx(2 / 62)
    assert hits[1].score == pytest.approx(1 / 61 + 1 / 64)


def test_hits_carry_text_title_and_metadata(store):
    (hit,) = store.search("kangaroo", QUERY, "hybrid", 1)

    assert hit.chunk_id == "c.md#0"
    assert hit.title == "Facts"
    assert hit.text == "kangaroo facts and other animals"
    assert hit.metadata == {"author": "Bo", "year": 2024}


def test_hybrid_without_text_falls_back_to_dense(store):
    assert ids(store.search("  ", QUERY, "hybrid", 2)) == ["a.md", "c.md"]


@pytest.mark.parametrize("mode", SEARCH_MODES)
def test_an_empty_query_finds_nothing(store, mode):
    assert store.search(" ", None, mode, 5) == []


@pytest.mark.parametrize("mode", SEARCH_MODES)
def test_filters_apply_in_every_mode(store, mode):
    hits = store.search("kangaroo", QUERY, mode, 4, {"year": 2024, "author": ["Bo", "Zed"]})

    assert ids(hits) == ["c.md"]


def test_filter_values_with_quotes_match_exactly(store):
    assert ids(store.search("x", QUERY, "dense", 4, {"author": "O'Brien"})) == ["b.md"]
    assert store.search("x", QUERY, "dense", 4, {"author": "x' OR '1'='1"}) == []
    assert ids(store.search("x", QUERY, "dense", 4, {"title": "Caches"})) == ["d.md"]
    assert ids(store.search("x", QUERY, "dense", 4, {"author": None})) == ["d.md"]


def test_search_rejects_unknown_fields_and_modes(store):
    with pytest.raises(UnknownFilterField):
        store.search("x", QUERY, "dense", 4, {"team": "a"})
    with pytest.raises(ValueError, match="unknown search mode"):
        store.search("x", QUERY, "semantic", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="query vector"):
        store.search("x", None, "dense", 4)


def test_a_missing_index_names_the_command_that_builds_it(tmp_path):
    with pytest.raises(IndexNotBuilt) as info:
        ChunkStore(tmp_path / "empty").search("q", QUERY, "hybrid", 5)
    assert str(info.value).endswith(index_hint())


def test_missing_table_raises_index_not_built_with_the_hint(tmp_path):
    store = ChunkStore(
        tmp_path / "empty", not_built_hint="Run `llmserve index c.yaml --pipeline p`."
    )

    with pytest.raises(IndexNotBuilt, match=r"'chunks' not found.*llmserve index c\.yaml"):
        store.search("q", QUERY, "hybrid", 5)
    assert store.version is None
    assert not store.exists()


def test_empty_table_returns_no_hits(tmp_path):
    store = ChunkStore(tmp_path / "db", metadata_fields=[])
    store.ensure_table(dim=4)
    store.rebuild_fts_index()

    for mode in SEARCH_MODES:
        assert store.search("anything", QUERY, mode, 5) == []


# -- readers and writers ---------------------------------------------------------


def test_readers_infer_filterable_fields_from_the_table(store):
    reader = ChunkStore(store.uri, "chunks")

    assert reader.filter_fields() == ("source", "title", "author", "year")
    assert ids(reader.search("x", QUERY, "dense", 4, {"author": "Ann"})) == ["a.md"]


def test_a_running_reader_sees_a_reindex(store):
    eager = ChunkStore(store.uri, "chunks", read_consistency_interval=0)
    manual = ChunkStore(store.uri, "chunks", read_consistency_interval=None)
    assert len(eager.search("kangaroo", None, "bm25", 5)) == 2
    assert len(manual.search("kangaroo", None, "bm25", 5)) == 2

    store.replace_files(["b.md"], None)  # another "process" drops a file

    assert ids(eager.search("kangaroo", None, "bm25", 5)) == ["c.md"]
    manual.refresh()
    assert ids(manual.search("kangaroo", None, "bm25", 5)) == ["c.md"]


def test_replacing_a_file_is_one_commit(store):
    chunks, vectors = make_chunks()
    version = store.version
    new = Chunk("b.md#0", "b.md", "Habitat", "wombat burrows", {}, "h-new", 0, "b.md")

    store.replace_files(["b.md"], store.rows_for([new], [vectors[1]]))

    assert store.version == version + 1
    assert ids(store.search("wombat", None, "bm25", 5)) == ["b.md"]
    assert store.count() == 4


def test_store_survives_pickling(store):
    clone = pickle.loads(pickle.dumps(store))

    assert ids(clone.search("kangaroo", QUERY, "hybrid", 1)) == ["c.md"]


def test_schema_change_recreates_the_table(store):
    assert store.ensure_table(dim=4) is False
    assert store.ensure_table(dim=8) is True
    assert store.count() == 0


def test_bad_filters_are_reported_even_without_an_index(tmp_path):
    store = ChunkStore(tmp_path / "empty", metadata_fields=["team"])

    with pytest.raises(UnknownFilterField):
        store.search("q", QUERY, "hybrid", 5, {"owner": "me"})
    with pytest.raises(IndexNotBuilt):
        store.search("q", QUERY, "hybrid", 5, {"team": "web"})


def test_compaction_keeps_the_data(store):
    store.replace_files(["b.md"], None)

    store.compact()

    assert store.count() == 3
    assert ids(store.search("kangaroo", None, "bm25", 5)) == ["c.md"]
