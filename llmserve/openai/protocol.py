"""Wire models vLLM lacks: RAG overrides, sources and the retrieve API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llmserve.literals import QueryMode, SearchMode
from llmserve.openai.errors import APIError


class RagOverrides(BaseModel):
    """Per-request RAG settings, sent as ``rag`` in ``extra_body``."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(None, gt=0, description="Chunks to retrieve.")
    top_n: int | None = Field(None, gt=0, description="Chunks to keep after reranking.")
    filters: dict[str, Any] | None = Field(None, description="Metadata filters: field -> value(s).")
    mode: SearchMode | None = Field(None, description="hybrid, dense or bm25.")
    return_sources: bool = Field(True, description="Include `sources` in the response.")
    query_mode: QueryMode | None = Field(
        None, description="last, history or rewrite: how the search query is built."
    )


class RetrieveRequest(BaseModel):
    """``POST /v1/retrieve``: search a pipeline's index without generating."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str
    query: str
    top_k: int | None = Field(None, gt=0)
    filters: dict[str, Any] | None = None
    mode: SearchMode | None = None


class Source(BaseModel):
    """One numbered source of a RAG answer; ``id`` is the ``[n]`` in the text."""

    id: int
    source: str
    title: str
    chunk_id: str
    text: str
    score: float


def chat_messages(body: dict[str, Any]) -> list[Any]:
    """A chat request's ``messages``; ``APIError(400)`` unless it is a list.

    vLLM's own validators iterate ``messages`` before pydantic checks its type,
    so a body with a string there must be refused before it reaches them.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise APIError(400, "messages must be a list of chat messages", param="messages")
    return messages
