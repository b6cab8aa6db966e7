"""LanceDB behaviour llmserve relies on beyond its typed API.

The chunk store (``llmserve/rag/store.py``) reads the score columns LanceDB
adds to query results, and recognises one error by its text, since LanceDB
raises it as a plain ``ValueError``. The canaries, which run real LanceDB
queries, are in ``tests/unit/compat/test_lancedb.py``.
"""

from __future__ import annotations

from typing import Final

DISTANCE_COLUMN: Final = "_distance"
"""A vector query's distance column (cosine distance here: lower is closer)."""

FTS_SCORE_COLUMN: Final = "_score"
"""A full-text query's BM25 score column (higher is better)."""

RELEVANCE_COLUMN: Final = "_relevance_score"
"""A hybrid query's fused score column, the reranker's output (higher is better)."""


def is_missing_fts_index(exc: BaseException) -> bool:
    """Whether a query failed because the table has no full-text index.

    Earlier LanceDB releases raised a ``ValueError`` saying that full-text
    search needs an "INVERTED index". LanceDB 0.40 has no such error: it
    searches a column without the index instead (slower, same results).
    """
    return isinstance(exc, ValueError) and "INVERTED index" in str(exc)
