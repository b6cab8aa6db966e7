"""TP=2 on CPU (vLLM's multiprocessing executor, one OMP core list per rank)
gives the same greedy text as TP=1, through llmserve's own engine start-up."""

from __future__ import annotations

import asyncio
import os

import pytest

from llmserve.config import ModelConfig
from llmserve.engine.serving import start_engine

PROMPTS = ["The capital of France is", "Once upon a time", "1, 2, 3,"]


def tiny(tp: int) -> ModelConfig:
    return ModelConfig(
        id=f"tiny-tp{tp}",
        source="builtin:tiny-llama",
        device="cpu",
        engine_kwargs={"dtype": "float32", "max_model_len": 256, "enforce_eager": True},
        parallelism={"tensor_parallel_size": tp},
    )


async def greedy_texts(tp: int) -> list[str]:
    from vllm import SamplingParams

    bundle = await start_engine(tiny(tp))
    try:
        params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
        texts = []
        for i, prompt in enumerate(PROMPTS):
            async for out in bundle.engine.generate(prompt, params, request_id=f"tp{tp}-{i}"):
                final = out
            texts.append(final.outputs[0].text)
        return texts
    finally:
        bundle.engine.shutdown()


@pytest.fixture
def clean_env():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="TP=2 on CPU needs 2 cores")
def test_tp2_matches_tp1_greedy(clean_env):
    tp1 = asyncio.run(greedy_texts(1))
    tp2 = asyncio.run(greedy_texts(2))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert all(t for t in tp1)
    assert tp2 == tp1
