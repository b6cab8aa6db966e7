"""LLMServer's answers when its vLLM engine has died: a retryable 503, never vLLM's 500."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from llmserve.openai.errors import APIError, error_body
from llmserve.servers.llm_server import LLMServer, _Handler
from llmserve.servers.protocol import GENERATION_ENDPOINTS, NO_META, Endpoint, RequestMeta

pytestmark = pytest.mark.unit

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
EVENT = 'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
# What vLLM's stream generator yields when the engine dies under it.
DEAD_EVENT = "data: " + json.dumps(error_body(500, "EngineCore encountered an issue.")) + "\n\n"


class Engine:
    def __init__(self, errored: bool = False) -> None:
        self.errored = errored
        self.shut_down = False

    def shutdown(self) -> None:
        self.shut_down = True

    async def check_health(self) -> None:
        if self.errored:
            raise RuntimeError("engine dead")


class Answer:
    def __init__(self, body: dict) -> None:
        self._body = body

    def model_dump(self) -> dict:
        return self._body


def _server(engine: Engine, starts: list[Engine] | None = None) -> LLMServer:
    """An LLMServer around a fake engine; ``starts`` are the engines a restart gets."""
    server = LLMServer.__new__(LLMServer)
    server.model_id, server._engine = "m", engine
    server._restart_in_place, server._recovering, server._gave_up = True, None, False
    fresh = list(starts or [])

    async def start_engine() -> None:
        await asyncio.sleep(0)
        if not fresh:
            raise RuntimeError("no engine to start")
        server._engine = fresh.pop(0)

    server._start_engine = start_engine
    return server


async def _collect(server: LLMServer, create) -> list:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    handler = _Handler(ChatCompletionRequest, create)
    return [item async for item in server._serve(handler, BODY, NO_META)]


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
            async for item in _server(engine)._serve(
                _Handler(_request_type(), create), BODY, NO_META
            ):
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


def test_a_fused_engine_that_died_is_restarted_in_place() -> None:
    dead, fresh = Engine(errored=True), Engine()
    server = _server(dead, starts=[fresh])

    async def run() -> None:
        assert not server.ready()  # starts the restart
        await server.check_health()  # restarting is not a reason to replace the replica
        with pytest.raises(RuntimeError):
            await server.probe()  # but /health says 503 meanwhile
        await server._recovering
        assert server.ready() and server._engine is fresh
        await server.probe()

    asyncio.run(run())
    assert dead.shut_down


def test_an_engine_that_cannot_be_restarted_fails_the_serve_health_check() -> None:
    server = _server(Engine(errored=True), starts=[])

    async def run() -> None:
        assert not server.ready()
        await server._recovering
        with pytest.raises(RuntimeError, match="could not be restarted"):
            await server.check_health()

    asyncio.run(run())


class Tokenization:
    """Stands in for vLLM's ServingTokenization; records the parsed requests."""

    def __init__(self) -> None:
        self.requests: list = []

    async def create_tokenize(self, request, raw):
        self.requests.append(request)
        return Answer({"tokens": [1, 2], "count": 2, "max_model_len": 8, "token_strs": None})

    async def create_detokenize(self, request, raw):
        self.requests.append(request)
        return Answer({"prompt": "hi"})


def _tokenizing_server() -> tuple[LLMServer, Tokenization]:
    server, tokenization = _server(Engine()), Tokenization()
    server._tokenization = tokenization
    # not asked here
    server._chat = SimpleNamespace(create_chat_completion=None)
    server._completion = SimpleNamespace(create_completion=None)
    server._handlers = server._handler_table()
    return server, tokenization


def test_the_server_answers_exactly_the_generation_endpoints() -> None:
    server, _ = _tokenizing_server()
    assert set(server._handlers) == GENERATION_ENDPOINTS


def test_tokenize_and_detokenize_are_answered_by_vllms_tokenization() -> None:
    from vllm.entrypoints.serve.tokenize.protocol import (
        DetokenizeRequest,
        TokenizeChatRequest,
        TokenizeCompletionRequest,
    )

    server, tokenization = _tokenizing_server()

    async def collect(endpoint, body):
        return [item async for item in server.respond(Endpoint(endpoint), body, NO_META)]

    assert asyncio.run(collect("tokenize", {"model": "m", "prompt": "hi"}))[0]["count"] == 2
    asyncio.run(collect("tokenize", BODY))
    assert asyncio.run(collect("detokenize", {"model": "m", "tokens": [1, 2]})) == [
        {"prompt": "hi"}
    ]
    kinds = [type(r) for r in tokenization.requests]
    assert kinds == [TokenizeCompletionRequest, TokenizeChatRequest, DetokenizeRequest]


def test_a_bad_detokenize_body_is_400_naming_the_field() -> None:
    server, tokenization = _tokenizing_server()

    async def collect():
        body = {"model": "m", "tokens": "abc"}
        return [item async for item in server.respond(Endpoint.DETOKENIZE, body, NO_META)]

    [answer] = asyncio.run(collect())
    assert answer["error"]["code"] == 400
    assert answer["error"]["param"].startswith("tokens")
    assert tokenization.requests == []


@pytest.mark.parametrize(
    ("by_priority", "meta", "expected"),
    [
        (True, RequestMeta(tenant="t", priority="high"), -1),
        (True, RequestMeta(tenant="t", priority="low"), 1),
        (True, NO_META, 0),  # normal: vLLM's default
        (False, RequestMeta(tenant="t", priority="high"), 0),  # an FCFS engine: never set
    ],
)
def test_a_priority_engine_gets_the_tenants_class_as_vllms_priority(
    by_priority: bool, meta: RequestMeta, expected: int
) -> None:
    seen: list = []

    async def create(request, raw):
        seen.append(request)
        return Answer({"object": "chat.completion"})

    async def run() -> None:
        server = _server(Engine())
        server._by_priority = by_priority
        server._chat = SimpleNamespace(create_chat_completion=create)
        server._completion = server._tokenization = server._responses = SimpleNamespace()
        server._handlers = {Endpoint.CHAT: _Handler(_request_type(), create)}
        assert [a async for a in server.respond(Endpoint.CHAT, BODY, meta)] == [
            {"object": "chat.completion"}
        ]

    asyncio.run(run())
    assert seen[0].priority == expected
