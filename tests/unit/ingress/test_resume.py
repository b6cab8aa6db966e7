"""Stream resumption: what is recorded from a stream, and how its continuation looks."""

from __future__ import annotations

import json

import pytest

from llmserve.compat.vllm import chat_completion_request_fields, completion_request_fields
from llmserve.ingress.resume import MAX_RESUMES, NOT_CARRIED, StreamState, resumable

pytestmark = pytest.mark.unit

CHAT = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 10,
    "temperature": 0,
    "stream_options": {"include_usage": True},
}


def _event(chunk: dict) -> str:
    return "data: " + json.dumps(chunk) + "\n\n"


def _chat_chunk(content: str, ids: list[int], first: bool = False, finish: str | None = None):
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": content}, "finish_reason": finish, "token_ids": ids}
        ],
    }
    if first:
        chunk["prompt_token_ids"] = [1, 2, 3]
    return _event(chunk)


def _data(raw: bytes) -> dict:
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    return json.loads(raw[len(b"data: ") :])


@pytest.mark.parametrize(
    ("method", "change", "expected"),
    [
        ("chat", {}, True),
        ("chat", {"stream": False}, False),
        ("chat", {"n": 2}, False),
        ("chat", {"tools": [{"type": "function"}]}, False),
        ("chat", {"logprobs": True}, False),
        ("chat", {"response_format": {"type": "json_object"}}, False),
        ("completions", {"prompt": "Once"}, True),
        ("completions", {"prompt": [5, 6]}, True),
        ("completions", {"prompt": ["a", "b"]}, False),
        ("embeddings", {}, False),
    ],
)
def test_only_plain_single_text_streams_are_resumable(method, change, expected) -> None:
    assert resumable(method, {**CHAT, **change}) is expected


def test_the_stream_asks_for_token_ids_and_the_client_does_not_see_them() -> None:
    state = StreamState("chat", CHAT)
    assert state.request_body()["return_token_ids"] is True
    first = _data(state.relay(_chat_chunk("", [], first=True)))
    second = _data(state.relay(_chat_chunk("Hel", [10, 11])))
    assert first["prompt_token_ids"] is None
    assert second["choices"][0]["token_ids"] is None
    assert second["choices"][0]["delta"]["content"] == "Hel"
    assert (state.prompt_ids, state.token_ids) == ([1, 2, 3], [10, 11])


def test_a_client_that_asked_for_token_ids_keeps_them() -> None:
    state = StreamState("chat", {**CHAT, "return_token_ids": True})
    assert _data(state.relay(_chat_chunk("Hel", [10, 11])))["choices"][0]["token_ids"] == [10, 11]


def test_the_continuation_prompts_with_every_token_id_sent_and_the_tokens_left() -> None:
    state = StreamState("chat", CHAT)
    state.relay(_chat_chunk("", [], first=True))
    state.relay(_chat_chunk("Hel", [10, 11]))
    body = state.continuation()
    assert body["prompt"] == [1, 2, 3, 10, 11]
    assert body["max_tokens"] == 8
    assert (body["temperature"], body["stream"], body["return_token_ids"]) == (0, True, True)
    assert body["stream_options"] == {"include_usage": True}
    assert "messages" not in body


# The fields of vLLM 0.32's CompletionRequest that a continuation carries, as
# reviewed: sampling, stopping, scheduling and cache isolation. A field a new
# vLLM adds fails the test below until it is added here or to NOT_CARRIED.
CARRIED = {
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "length_penalty",
    "logit_bias",
    "allowed_token_ids",
    "bad_words",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "spaces_between_special_tokens",
    "repetition_detection",
    "thinking_token_budget",
    "watermarking",
    "vllm_xargs",  # arguments of custom logits processors
    "stream_interval",
    "priority",
    "cache_salt",
    "session_id",
    "user",
}


def test_every_field_of_vllms_completion_request_is_carried_or_excluded() -> None:
    fields = completion_request_fields()
    assert fields - NOT_CARRIED == CARRIED
    assert not CARRIED & NOT_CARRIED


def test_no_chat_only_field_reaches_the_continuation_undecided() -> None:
    """A chat field vLLM's CompletionRequest lacks would be carried as an extra it ignores."""
    chat_only = chat_completion_request_fields() - completion_request_fields()
    assert chat_only - NOT_CARRIED == set()


def _resumed(method: str, body: dict) -> dict:
    state = StreamState(method, body)
    state.prompt_ids, state.token_ids = [1, 2, 3], [10, 11]
    return state.continuation()


@pytest.mark.parametrize(
    ("method", "fields"),
    [("chat", chat_completion_request_fields), ("completions", completion_request_fields)],
)
def test_the_continuation_carries_what_vllms_completion_request_accepts_less_the_excluded(
    method, fields
) -> None:
    body = dict.fromkeys(fields(), None) | {"model": "m", "max_tokens": 10}
    carried = (fields() & completion_request_fields()) - NOT_CARRIED
    expected = carried | {"model", "prompt", "stream", "return_token_ids", "max_tokens"}
    assert set(_resumed(method, body)) == expected


SAMPLING = {
    "temperature": 0.7,
    "top_p": 0.9,
    "top_k": 20,
    "min_p": 0.05,
    "seed": 1234,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.25,
    "repetition_penalty": 1.1,
    "logit_bias": {"42": -100.0},
    "allowed_token_ids": [10, 11, 12, 13, 14],
    "bad_words": ["never"],
    "stop": ["\n\n"],
    "stop_token_ids": [2],
    "ignore_eos": True,
    "include_stop_str_in_output": True,
    "skip_special_tokens": False,
    "spaces_between_special_tokens": False,
    "repetition_detection": {"max_pattern_size": 4, "min_pattern_size": 2, "min_count": 3},
    "thinking_token_budget": 64,
    "vllm_xargs": {"my_processor_strength": 2},
    "stream_interval": 2,
    "min_tokens": 5,
}
REQUEST = {"priority": 3, "cache_salt": "tenant-7-salt", "session_id": "s-1", "user": "u-1"}


def test_a_resumed_chat_stream_is_the_same_request_to_vllm() -> None:
    """vLLM's own request models turn the original and the continuation into the same
    sampling parameters, less the tokens already sent."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    # logits_processors is not a field of vLLM 0.32 (custom processors take
    # vllm_xargs); it is carried like any key vLLM accepts and ignores.
    body = {**CHAT, **SAMPLING, **REQUEST, "logits_processors": ["my.Processor"]}
    continued = _resumed("chat", body)
    assert {k: continued[k] for k in [*SAMPLING, *REQUEST] if k != "min_tokens"} == {
        k: v for k, v in {**SAMPLING, **REQUEST}.items() if k != "min_tokens"
    }
    assert continued["logits_processors"] == ["my.Processor"]
    assert (continued["max_tokens"], continued["min_tokens"]) == (8, 3)

    original = ChatCompletionRequest.model_validate(body)
    continuation = CompletionRequest.model_validate(continued)
    before = original.to_sampling_params(10, {})
    after = continuation.to_sampling_params(continued["max_tokens"], {})
    assert (before.max_tokens, after.max_tokens, before.min_tokens, after.min_tokens) == (
        10,
        8,
        5,
        3,
    )
    differ = {"max_tokens", "min_tokens"}
    for name in before.__struct_fields__:
        if name not in differ:
            assert getattr(after, name) == getattr(before, name), name
    for name in REQUEST:
        assert getattr(continuation, name) == getattr(original, name), name


def test_beam_search_streams_are_not_resumed() -> None:
    assert not resumable("chat", {**CHAT, "use_beam_search": True})


def test_continued_chunks_are_chunks_of_the_original_chat_stream() -> None:
    state = StreamState("chat", CHAT)
    state.relay(_chat_chunk("", [], first=True))
    state.relay(_chat_chunk("Hel", [10, 11]))
    state.continuation()
    piece = {
        "id": "cmpl-9",
        "object": "text_completion",
        "created": 99,
        "model": "m",
        "choices": [{"index": 0, "text": "lo", "finish_reason": "length", "token_ids": [12]}],
    }
    chunk = _data(state.relay_continued(_event(piece)))
    assert (chunk["id"], chunk["created"], chunk["object"]) == (
        "chatcmpl-1",
        7,
        "chat.completion.chunk",
    )
    assert chunk["choices"][0]["delta"] == {"content": "lo"}
    assert chunk["choices"][0]["finish_reason"] == "length"
    assert chunk["choices"][0]["token_ids"] is None
    usage = {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}
    last = _data(state.relay_continued(_event({**piece, "choices": [], "usage": usage})))
    # Usage counts the original prompt and every token the client got.
    assert last["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert state.relay_continued("data: [DONE]\n\n") == b"data: [DONE]\n\n"


def test_a_finished_or_twice_resumed_stream_is_not_resumed_again() -> None:
    state = StreamState("chat", CHAT)
    assert not state.can_resume()  # no prompt ids yet: nothing to continue from
    state.relay(_chat_chunk("", [], first=True))
    for _ in range(MAX_RESUMES):
        assert state.can_resume()
        state.continuation()
    assert not state.can_resume()
    done = StreamState("chat", CHAT)
    done.relay(_chat_chunk("", [], first=True))
    done.relay(_chat_chunk("x", [4], finish="stop"))
    assert not done.can_resume()


class _DyingModel:
    """A model whose first stream dies after two chunks; ``completions`` continues it."""

    def __init__(self) -> None:
        self.continued: list[dict] = []

    def respond(self, endpoint, body, meta=None):
        return self.chat(body) if endpoint == "chat" else self.completions(body)

    async def chat(self, body):
        from ray.exceptions import ActorDiedError

        assert body["return_token_ids"] is True
        yield _chat_chunk("", [], first=True)
        yield _chat_chunk("Hel", [10, 11])
        raise ActorDiedError()

    async def completions(self, body):
        self.continued.append(body)
        piece = {"id": "cmpl-9", "object": "text_completion", "created": 99, "model": "m"}
        yield _event(piece | {"choices": [{"index": 0, "text": "lo", "token_ids": [12]}]})
        done = {"index": 0, "text": "!", "token_ids": [13], "finish_reason": "length"}
        yield _event(piece | {"choices": [done]})
        yield "data: [DONE]\n\n"


def test_the_ingress_continues_a_dying_stream_as_one_stream() -> None:
    from fastapi.testclient import TestClient

    model = _DyingModel()
    body = {k: v for k, v in CHAT.items() if k != "stream_options"}
    with TestClient(_app(model, resumable=True)) as client:
        response = client.post("/v1/chat/completions", json=body)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello!"
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    [continued] = model.continued
    assert continued["prompt"] == [1, 2, 3, 10, 11] and continued["max_tokens"] == 8


def test_a_stream_of_a_model_without_resumption_ends_with_the_error_event() -> None:
    from fastapi.testclient import TestClient

    model = _DyingModel()
    with TestClient(_app(model, resumable=False)) as client:
        body = {**CHAT, "return_token_ids": True}
        response = client.post("/v1/chat/completions", json=body)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert json.loads(events[-2])["error"]["code"] == 503 and events[-1] == "[DONE]"
    assert model.continued == []


def _app(model: _DyingModel, resumable: bool):
    """The ingress's app with one model ``m`` on chat and completions."""
    from llmserve.config import IngressConfig
    from llmserve.ingress.app import build_ingress_app
    from llmserve.ingress.routes import Route, RouteTable
    from llmserve.servers.clients import LocalClient
    from llmserve.servers.protocol import Endpoint

    routes = RouteTable()
    endpoints = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS})
    routes.add(Route("m", endpoints, {"id": "m"}, resumable=resumable))
    return build_ingress_app(IngressConfig(), [], routes, {"m": LocalClient(model)})
