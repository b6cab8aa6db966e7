"""LLMServer's answers when its vLLM engine has died: a retryable 503, never vLLM's 500."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmserve.deployments.llm_server import LLMServer
from llmserve.openai.errors import APIError, error_body

pytestmark = pytest.mark.unit

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
EVENT = 'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
# What vLLM's stream generator yields when the engine dies under it.
DEAD_EVENT = "data: " + json.dumps(error_body(500, "EngineCore encountered an issue.")) + "\n\n"


class Engine:
    def __init__(self, errored: bool = False) -> None:
        self.errored = errored


class Answer:
    def __init__(self, body: dict) -> None:
        self._body = body

    def model_dump(self) -> dict:
        return self._body


def _server(engine: Engine) -> LLMServer:
    server = LLMServer.__new__(LLMServer)
    server.model_id, server._engine = "m", engine
    return server


async def _collect(server: LLMServer, create) -> list:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return [item async for item in server._serve(ChatCompletionRequest, BODY, create)]


def test_a_request_to_a_dead_engine_is_503() -> None:
    async def create(request, raw):
        raise AssertionError("a dead engine must not be asked")

    [answer] = asyncio.run(_collect(_server(Engine(errored=True)), create))
    assert answer["error"]["code"] == 503


def test_vllms_500_for_a_dead_engine_becomes_503() -> None:
    engine = Engine()

    async def create(request, raw):
        engine.errored = True  # the engine died while answering
        return Answer(error_body(500, "EngineCore encountered an issue."))

    [answer] = asyncio.run(_collect(_server(engine), create))
    assert answer["error"]["code"] == 503


def test_a_stream_whose_engine_dies_raises_503_not_vllms_500_event() -> None:
    engine = Engine()

    async def stream():
        yield EVENT
        engine.errored = True
        yield DEAD_EVENT
        yield "data: [DONE]\n\n"

    async def create(request, raw):
        return stream()

    async def run() -> list:
        out = []
        with pytest.raises(APIError) as err:
            async for item in _server(engine)._serve(_request_type(), BODY, create):
                out.append(item)
        assert err.value.status == 503
        return out

    assert asyncio.run(run()) == [EVENT]


def test_an_ordinary_error_event_passes_through_untouched() -> None:
    engine = Engine()
    bad = "data: " + json.dumps(error_body(400, "bad logits processor")) + "\n\n"

    async def stream():
        yield bad
        yield "data: [DONE]\n\n"

    async def create(request, raw):
        return stream()

    assert asyncio.run(_collect(_server(engine), create)) == [bad, "data: [DONE]\n\n"]


def _request_type():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest
