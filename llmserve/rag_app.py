"""RAG deployments (embedders, rerankers, retrievers, pipeline routers)."""

from __future__ import annotations

from llmserve.config import AppConfig
from llmserve.deployments.ingress import Routes


def add_rag_deployments(config: AppConfig, routes: Routes, home: str) -> None:
    """Adds the RAG stages to ``routes``; filled in by the RAG router work."""
