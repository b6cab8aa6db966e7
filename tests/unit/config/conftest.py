from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llmserve.config import ConfigError, validate_config_dict

_RAG = {
    "models": [{"id": "gen", "source": "builtin:tiny-llama"}],
    "embedders": [{"id": "emb", "source": "builtin:all-minilm-l6-v2"}],
    "rerankers": [{"id": "rr", "source": "builtin:all-minilm-l6-v2"}],
    "retrievers": [
        {"id": "docs", "embedder": "emb", "uri": "/srv/index", "corpus": {"paths": ["/srv/docs"]}}
    ],
    "pipelines": [{"id": "rag", "retriever": "docs", "reranker": "rr", "generator": "gen"}],
}


@pytest.fixture
def rag_data() -> dict[str, Any]:
    """A small valid config with every kind of component; tests break one thing."""
    return copy.deepcopy(_RAG)


@pytest.fixture
def issues() -> Callable[[dict[str, Any]], dict[str, str]]:
    """Validate data that must fail; returns {path: message} of every issue."""

    def run(data: dict[str, Any]) -> dict[str, str]:
        with pytest.raises(ConfigError) as info:
            validate_config_dict(data)
        paths = [issue.path for issue in info.value.issues]
        assert len(paths) == len(set(paths)), f"one issue per path expected: {paths}"
        return {issue.path: issue.message for issue in info.value.issues}

    return run


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "llmserve.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
