"""Retrieval-augmented generation: documents → chunks → LanceDB index → prompts.

Plain modules with no Ray dependency; the Serve deployments wrap them.
"""

from llmserve.rag.chunking import Chunk, chunk_document, chunk_documents, embedding_text
from llmserve.rag.discovery import (
    CorpusFiles,
    SkippedFile,
    SourceFile,
    discover_files,
    load_documents,
)
from llmserve.rag.documents import Document, DocumentLoadError, load_file
from llmserve.rag.indexer import IndexReport, build_index
from llmserve.rag.prompt import build_messages, format_context
from llmserve.rag.store import (
    ChunkStore,
    Hit,
    IndexNotBuilt,
    InvalidFilter,
    UnknownFilterField,
    index_hint,
)

__all__ = [
    "Chunk",
    "ChunkStore",
    "CorpusFiles",
    "Document",
    "DocumentLoadError",
    "Hit",
    "IndexNotBuilt",
    "IndexReport",
    "InvalidFilter",
    "SkippedFile",
    "SourceFile",
    "UnknownFilterField",
    "build_index",
    "build_messages",
    "chunk_document",
    "chunk_documents",
    "discover_files",
    "embedding_text",
    "format_context",
    "index_hint",
    "load_documents",
    "load_file",
]
