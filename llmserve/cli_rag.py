"""RAG commands for the CLI (``llmserve index``); filled in by the RAG work."""

from __future__ import annotations


def add_rag_commands(sub) -> None:
    """Registers RAG subcommands."""


def ensure_indexes(config) -> None:
    """Builds missing RAG indexes before the app starts."""
