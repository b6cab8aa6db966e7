"""One small app for the load suite, deliberately tiny in capacity so that 3x is cheap.

- ``tiny``: the tiny model fused into the ingress, 4 running + 4 queued.
- ``tiny-remote``: the same model as its own deployment behind a handle,
  4 + 4, with a 1.5 s request timeout (the timeout tests use it).
- ``rag``: a pipeline over a few small documents, generating with ``tiny``
  (so its router runs in the ingress), 4 + 4.
- ``minilm`` (embedder) and ``minilm-rerank`` (reranker), for the routes that
  reach pooling engines.

A stream's client may accept no bytes for ``SEND_TIMEOUT_S`` before the ingress
cuts it (the slow-reader tests wait for that).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from llmserve.config import AppConfig, validate_config_dict
from tests.helpers import free_port, index_through_handle, running_app

ENGINE = {"dtype": "float32", "enforce_eager": True}
LIMITS = {"max_ongoing_requests": 4, "max_queued_requests": 4}
CAPACITY = LIMITS["max_ongoing_requests"] + LIMITS["max_queued_requests"]
REMOTE_TIMEOUT_S = 1.5
SEND_TIMEOUT_S = 2.0

DOCS = {
    "paris.md": "# Paris\n\nParis is the capital of France. The Seine runs through it.",
    "rome.md": "# Rome\n\nRome is the capital of Italy. The Tiber runs through it.",
    "ray.md": "# Ray Serve\n\nRay Serve runs deployments as replicas and scales them.",
    "vllm.md": "# vLLM\n\nvLLM batches many sequences at once with paged attention.",
    "lancedb.md": "# LanceDB\n\nLanceDB stores vectors on disk and searches them.",
}


@dataclass
class LoadApp:
    config: AppConfig
    url: str


def make_config(tmp_path) -> AppConfig:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in DOCS.items():
        (corpus / name).write_text(text)
    tiny = {
        "source": "builtin:tiny-llama",
        "device": "cpu",
        "engine_kwargs": {**ENGINE, "max_model_len": 2048},
        "deployment": LIMITS,
    }
    data = {
        "ingress": {
            "port": free_port(),
            "fused_model": "tiny",
            "request_timeout_s": 120,
            "send_timeout_s": SEND_TIMEOUT_S,
        },
        "models": [
            {"id": "tiny", **tiny},
            {"id": "tiny-remote", **tiny, "request_timeout_s": REMOTE_TIMEOUT_S},
        ],
        "embedders": [
            {"id": "minilm", "source": "builtin:all-minilm-l6-v2", "device": "cpu"}
            | {"engine_kwargs": ENGINE}
        ],
        "rerankers": [
            {"id": "minilm-rerank", "source": "builtin:all-minilm-l6-v2", "device": "cpu"}
            | {"engine_kwargs": ENGINE, "kind": "embedding"}
        ],
        "retrievers": [
            {
                "id": "docs",
                "embedder": "minilm",
                "uri": str(tmp_path / "index"),
                "corpus": {"paths": [str(corpus)], "chunk_tokens": 64, "chunk_overlap_tokens": 8},
            }
        ],
        "pipelines": [
            {"id": "rag", "retriever": "docs", "generator": "tiny", "top_n": 2}
            | {"deployment": LIMITS}
        ],
    }
    return validate_config_dict(data)


@pytest.fixture(scope="package")
def load_app(tmp_path_factory) -> LoadApp:
    config = make_config(tmp_path_factory.mktemp("load"))
    with running_app(config) as url:
        assert index_through_handle(config, "docs") > 0
        _warm_up(url)
        yield LoadApp(config, url)


def _warm_up(url: str) -> None:
    """One request of each kind first, as an operator's readiness probe would, so that
    first-use costs in the replica (lazy imports, first SSE stream) are not timed as overload."""
    for model in ("tiny", "tiny-remote", "rag"):
        for stream in (False, True):
            body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
            body |= {"max_tokens": 2, "stream": stream}
            response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
