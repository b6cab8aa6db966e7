"""What a request reserves of its tenant's tokens, and what the ingress reads back from
vLLM's answers (JSON, chat and completions streams, Responses streams)."""

from __future__ import annotations

import json

import pytest

from llmserve.ingress.ratelimit import RateLimiter
from llmserve.ingress.tenants import Tenant
from llmserve.ingress.usage import DEFAULT_COMPLETION_RESERVE, Account, estimate_tokens
from llmserve.openai import sse
from llmserve.servers.protocol import Endpoint

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        (Endpoint.CHAT, {"max_tokens": 100}, 25 + 100),
        (Endpoint.CHAT, {"max_completion_tokens": 7, "max_tokens": 100}, 25 + 7),
        (Endpoint.CHAT, {"max_tokens": 10, "n": 3}, 25 + 30),
        (Endpoint.CHAT, {}, 25 + DEFAULT_COMPLETION_RESERVE),
        (Endpoint.CHAT, {"max_tokens": True}, 25 + DEFAULT_COMPLETION_RESERVE),
        (Endpoint.RESPONSES, {"max_output_tokens": 64}, 25 + 64),
        (Endpoint.COMPLETIONS, {}, 25 + 16),  # vLLM's (and OpenAI's) default
        (Endpoint.EMBEDDINGS, {"max_tokens": 100}, 25),
        (Endpoint.TOKENIZE, {}, 25),
    ],
)
def test_the_reservation_is_the_prompt_estimate_plus_the_completion_limit(
    endpoint, body, expected
) -> None:
    assert estimate_tokens(endpoint, body, body_bytes=100) == expected


def _account(wants_usage: bool = True, tpm: int | None = 1000) -> tuple[Account, Tenant]:
    tenant = Tenant("t", limiter=RateLimiter(None, tpm, lambda: 1), accounted=True)
    if tenant.limiter is not None:
        tenant.limiter.admit(300)
    return Account(tenant, "m", reserved=300, wants_usage=wants_usage), tenant


def _level(tenant: Tenant) -> float:
    assert tenant.limiter is not None and tenant.limiter.tokens is not None
    tenant.limiter.tokens.sync()
    return tenant.limiter.tokens.level


def test_a_json_answer_settles_with_its_usage() -> None:
    account, tenant = _account()
    account.answer({"usage": {"prompt_tokens": 20, "completion_tokens": 5}}, 200)
    account.end(200)
    assert _level(tenant) == pytest.approx(1000 - 25, abs=0.1)
    account.end(200)  # once only
    assert _level(tenant) == pytest.approx(1000 - 25, abs=0.1)


def test_a_responses_stream_settles_with_response_completed() -> None:
    account, tenant = _account(wants_usage=False)
    completed = {
        "type": "response.completed",
        "response": {"id": "r", "usage": {"input_tokens": 30, "output_tokens": 12}},
    }
    event = sse.typed_event("response.completed", completed).encode()
    account.first_chunk(0.1)
    assert account.event(event)  # never left out: it is the answer itself
    account.end(200)
    assert _level(tenant) == pytest.approx(1000 - 42, abs=0.1)


def test_only_the_usage_chunk_nobody_asked_for_is_left_out() -> None:
    account, _ = _account(wants_usage=False)
    usage = {"prompt_tokens": 1, "completion_tokens": 2}
    assert account.event(sse.data({"choices": [{"delta": {"content": 'say "usage"'}}]}))
    assert account.event(sse.data({"choices": [{"delta": {}}], "usage": None}))
    assert not account.event(sse.data({"id": "c", "choices": [], "usage": usage}))
    assert account.event(b"data: [DONE]\n\n")
    kept, _ = _account(wants_usage=True)
    assert kept.event(sse.data({"id": "c", "choices": [], "usage": usage}))


def test_what_was_never_served_is_given_back_and_a_cut_stream_keeps_its_reservation() -> None:
    refused, tenant = _account()
    refused.end(503)
    assert _level(tenant) == pytest.approx(1000, abs=0.1)
    cut, tenant = _account()
    cut.first_chunk(0.1)
    cut.end(499)  # the client left mid-stream: no usage report, the engine did work
    assert _level(tenant) == pytest.approx(700, abs=0.1)


def test_text_that_mentions_usage_is_not_parsed_as_a_report() -> None:
    account, tenant = _account()
    text = json.dumps({"choices": [{"delta": {"content": '"usage":{"prompt_tokens":999}'}}]})
    assert account.event(f"data: {text}\n\n".encode())
    account.answer({}, 200)
    account.end(200)
    assert _level(tenant) == pytest.approx(700, abs=0.1)  # no usage seen: the reservation
