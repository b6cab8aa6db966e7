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


# --- the Responses API: background refused, the store bounded ----------------------------


class Responses:
    """Stands in for vLLM's OpenAIServingResponses: its two store dicts, and
    ``create_responses`` recording what it was asked."""

    def __init__(self) -> None:
        self.requests: list = []
        self.response_store: dict = {}
        self.msg_store: dict = {}

    async def create_responses(self, request, raw):
        from vllm.entrypoints.openai.responses.protocol import ResponsesResponse
        from vllm.sampling_params import SamplingParams

        self.requests.append(request)
        return ResponsesResponse.from_request(
            request, SamplingParams(), model_name="m", created_time=0, output=[], status="completed"
        )


def _responding_server() -> tuple[LLMServer, Responses]:
    server, _ = _tokenizing_server()
    server._responses = responses = Responses()
    server._handlers = server._handler_table()
    return server, responses


def _respond(server: LLMServer, body: dict) -> list:
    async def collect() -> list:
        return [item async for item in server.respond(Endpoint.RESPONSES, body, NO_META)]

    return asyncio.run(collect())


@pytest.mark.parametrize("stream", [False, True])
def test_a_background_response_is_refused_naming_background(stream: bool) -> None:
    """vLLM would answer at once and generate in a task of its own, outside the request's
    admission slot, timeout and cancellation; llmserve has no route to fetch it either."""
    server, responses = _responding_server()
    body = {"model": "m", "input": "hi", "background": True, "stream": stream}
    [answer] = _respond(server, body)
    error = answer["error"]
    assert (error["code"], error["type"], error["param"]) == (
        400,
        "invalid_request_error",
        "background",
    )
    assert "background" in error["message"]
    assert responses.requests == []  # vLLM never saw it


def test_a_foreground_response_is_answered_by_vllm() -> None:
    server, responses = _responding_server()
    [answer] = _respond(server, {"model": "m", "input": "hi", "background": False})
    assert answer["object"] == "response" and answer["status"] == "completed"
    [request] = responses.requests
    assert request.input == "hi"


def test_the_engine_start_bounds_vllms_responses_store(monkeypatch) -> None:
    from llmserve.config import ModelConfig
    from llmserve.engine.serving import EngineBundle
    from llmserve.servers import llm_server

    responses = Responses()
    serving = SimpleNamespace(
        chat=SimpleNamespace(create_chat_completion=None),
        completion=SimpleNamespace(create_completion=None),
        responses=responses,
        tokenization=Tokenization(),
        models=None,
    )

    async def start_engine(model, home):
        return EngineBundle(engine=Engine(), serving=serving)  # type: ignore[arg-type]

    async def no_warm_up(self) -> None:
        pass

    monkeypatch.setattr(llm_server, "start_engine", start_engine)
    monkeypatch.setattr(LLMServer, "_warm_up", no_warm_up)
    server = LLMServer.__new__(LLMServer)
    server.model_id, server._home = "m", None
    server._model = ModelConfig.model_validate(
        {"id": "m", "source": "org/m", "responses_store": {"max_responses": 2}}
    )
    asyncio.run(server._start_engine())
    for id_ in ("a", "b", "c"):  # as vLLM writes a stored request
        responses.msg_store[id_] = [{"role": "user", "content": "hi"}]
        responses.response_store[id_] = {"id": id_}
    assert list(responses.response_store) == ["b", "c"]
    assert list(responses.msg_store) == ["b", "c"]
    assert responses.response_store.get("a") is None
