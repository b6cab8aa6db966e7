"""Bad requests are 400s before they reach an engine, as on a bare vLLM server.

vLLM's request models reject some requests from ``mode="before"`` validators by
raising ``VLLMValidationError``, which pydantic does not wrap in a
``ValidationError``. vLLM's own server answers those with a 400 naming the
parameter. No engine is started here: validation happens before it is used.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.openai.completion.protocol import CompletionRequest
from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

from llmserve.engine.pooling import run_pooling
from llmserve.servers.llm_server import LLMServer, _Handler
from llmserve.servers.protocol import NO_META

pytestmark = pytest.mark.unit

MESSAGES = [{"role": "user", "content": "hi"}]


async def _engine_must_not_run(request, raw_request):
    raise AssertionError("an invalid request reached the engine")


def _serve(request_cls, body: dict[str, Any]) -> list:
    server = LLMServer.__new__(LLMServer)  # no engine: _serve validates first

    async def run() -> list:
        handler = _Handler(request_cls, _engine_must_not_run)
        return [item async for item in server._serve(handler, body, NO_META)]

    return asyncio.run(run())


def test_a_pydantic_error_is_a_400_answer() -> None:
    [answer] = _serve(ChatCompletionRequest, {"model": "m", "messages": "nope"})
    assert answer["error"]["code"] == 400
    assert answer["error"]["param"] == "messages"


VLLM_VALIDATOR_CASES = {
    "chat stream_options without stream": (
        ChatCompletionRequest,
        {"model": "m", "messages": MESSAGES, "stream_options": {"include_usage": True}},
        "stream_options",
    ),
    "chat top_logprobs without logprobs": (
        ChatCompletionRequest,
        {"model": "m", "messages": MESSAGES, "top_logprobs": 3},
        "top_logprobs",
    ),
    "chat json_schema without a schema": (
        ChatCompletionRequest,
        {"model": "m", "messages": MESSAGES, "response_format": {"type": "json_schema"}},
        "response_format",
    ),
    "completion stream_options without stream": (
        CompletionRequest,
        {"model": "m", "prompt": "hi", "stream_options": {"include_usage": True}},
        "stream_options",
    ),
}


@pytest.mark.parametrize(
    ("request_cls", "body", "param"),
    VLLM_VALIDATOR_CASES.values(),
    ids=VLLM_VALIDATOR_CASES.keys(),
)
def test_a_vllm_validator_error_is_a_400_naming_the_parameter(
    request_cls, body: dict[str, Any], param: str
) -> None:
    [answer] = _serve(request_cls, body)
    assert answer["error"]["code"] == 400
    assert answer["error"]["param"] == param


def test_a_vllm_validator_error_on_embeddings_is_a_400() -> None:
    body = {"model": "m", "input": "hi", "normalize": True}  # removed in vLLM; use_activation
    answer = asyncio.run(run_pooling(_engine_must_not_run, EmbeddingRequest, body))
    assert answer["error"]["code"] == 400
    assert answer["error"]["param"] == "normalize"
