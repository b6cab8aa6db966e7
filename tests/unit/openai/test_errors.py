"""The OpenAI error shape every llmserve error uses, and how request errors map onto it."""

from __future__ import annotations

import pickle
import time

import httpx
import openai
import pytest
from pydantic import ValidationError
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

from llmserve.openai.errors import (
    APIError,
    error_body,
    overloaded,
    status_of,
    timed_out,
    unavailable,
    validation_error_body,
)

pytestmark = pytest.mark.unit

MESSAGES = [{"role": "user", "content": "hi"}]

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    500: "internal_server_error",
    503: "service_unavailable_error",
}


@pytest.mark.parametrize(("status", "type_"), sorted(OPENAI_TYPES.items()))
def test_error_body_shape_and_type_per_status(status: int, type_: str) -> None:
    body = error_body(status, "something went wrong", param="temperature")
    assert body == {
        "error": {
            "message": "something went wrong",
            "type": type_,
            "param": "temperature",
            "code": status,
        }
    }
    assert APIError(status, "something went wrong", param="temperature").body() == body


def test_param_defaults_to_null() -> None:
    assert error_body(404, "Could not find model 'x'")["error"]["param"] is None
    assert APIError(500, "internal server error").body()["error"]["param"] is None


def test_other_statuses_fall_back_to_the_http_phrase() -> None:
    assert error_body(502, "upstream")["error"]["type"] == "Bad Gateway"
    assert APIError(505, "old").body()["error"]["type"] == "HTTP Version Not Supported"


class _Server:
    """An httpx transport that answers with ``errors`` (our bodies, with Retry-After),
    then with a chat completion; it counts the calls and when they came."""

    COMPLETION = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            }
        ],
    }

    def __init__(self, *errors: APIError, retry_after: str = "1"):
        self.errors = list(errors)
        self.retry_after = retry_after
        self.calls: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(time.monotonic())
        if len(self.calls) <= len(self.errors):
            err = self.errors[len(self.calls) - 1]
            headers = {"Retry-After": self.retry_after}
            return httpx.Response(err.status, json=err.body(), headers=headers)
        return httpx.Response(200, json=self.COMPLETION)

    def client(self, max_retries: int) -> openai.OpenAI:
        return openai.OpenAI(
            api_key="x",
            base_url="http://llmserve.test/v1",
            max_retries=max_retries,
            timeout=5,
            http_client=httpx.Client(transport=httpx.MockTransport(self)),
        )


def _chat(client: openai.OpenAI):
    return client.chat.completions.create(model="m", messages=MESSAGES)


@pytest.mark.parametrize(
    ("err", "sdk_error"),
    [(overloaded("m"), openai.RateLimitError), (unavailable("m"), openai.InternalServerError)],
    ids=["429", "503"],
)
def test_the_openai_sdk_raises_its_own_error_for_ours(err: APIError, sdk_error) -> None:
    server = _Server(err)
    with pytest.raises(sdk_error) as raised:
        _chat(server.client(max_retries=0))
    assert raised.value.status_code == err.status
    assert raised.value.body == err.body()["error"]
    assert len(server.calls) == 1
    if err.status == 429:
        assert raised.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("err", [overloaded("m"), unavailable("m")], ids=["429", "503"])
def test_the_openai_sdk_retries_after_the_time_in_retry_after(err: APIError) -> None:
    # Retry-After: 1 s; without it the SDK's first backoff is at most 0.5 s.
    server = _Server(err, retry_after="1")
    answer = _chat(server.client(max_retries=1))
    assert answer.choices[0].message.content == "hi"
    assert len(server.calls) == 2
    assert 1.0 <= server.calls[1] - server.calls[0] < 3.0


def test_the_openai_sdk_gives_up_after_max_retries() -> None:
    server = _Server(overloaded("m"), overloaded("m"), overloaded("m"), retry_after="1")
    with pytest.raises(openai.RateLimitError):
        _chat(server.client(max_retries=1))
    assert len(server.calls) == 2


def test_a_timeout_is_504() -> None:
    body = timed_out("m", 2.5).body()
    assert status_of(body) == 504
    assert body["error"]["type"] == "timeout_error"
    assert "2.5 s" in body["error"]["message"]


def test_an_explicit_type_wins() -> None:
    err = APIError(400, "bad", type="BadRequestError")
    assert err.body()["error"]["type"] == "BadRequestError"


@pytest.mark.parametrize(
    "err",
    [
        APIError(400, "top_k must be at most 50", param="rag.top_k"),
        APIError(503, "model 'm' is overloaded, retry later"),
        APIError(404, "Could not find model 'x'", param="model", type="NotFoundError"),
    ],
    ids=["400-param", "503", "404-custom-type"],
)
def test_api_error_survives_pickling(err: APIError) -> None:
    # Errors raised in a deployment cross a Ray handle before the ingress renders them.
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, APIError)
    assert (back.status, back.message, back.param, back.type) == (
        err.status,
        err.message,
        err.param,
        err.type,
    )
    assert back.body() == err.body()
    assert str(back) == str(err)


def test_api_error_survives_ray_cloudpickle() -> None:
    from ray import cloudpickle

    err = APIError(400, "query must not be empty", param="query")
    back = cloudpickle.loads(cloudpickle.dumps(err))
    assert back.body() == err.body()


def test_status_of_reads_vllm_error_responses() -> None:
    for code in (400, 404, 500, 503):
        body = ErrorResponse(
            error=ErrorInfo(message="m", type="BadRequestError", param=None, code=code)
        ).model_dump()
        assert status_of(body) == code


def test_status_of_reads_our_own_bodies() -> None:
    assert status_of(error_body(413, "too big")) == 413
    assert status_of(APIError(429, "slow down").body()) == 429


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"error": {}},
        {"error": {"code": None}},
        {"error": {"code": "400"}},
        {"error": {"code": 200}},
        {"error": {"code": 399}},
        {"error": {"code": 600}},
        {"error": {"code": 4.0e2}},
        {"error": {"message": "no code"}},
    ],
)
def test_status_of_junk_is_500(body: dict) -> None:
    assert status_of(body) == 500


@pytest.mark.parametrize("body", [{"error": "boom"}, {"error": None}, {"error": ["x"]}])
def test_status_of_junk_error_value_is_500(body: dict) -> None:
    assert status_of(body) == 500


def _validation_error(body: dict) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(body)
    return info.value


def test_messages_not_a_list_is_a_400_naming_messages() -> None:
    body = validation_error_body(_validation_error({"model": "m", "messages": "nope"}))
    err = body["error"]
    assert (err["code"], err["type"], err["param"]) == (400, "invalid_request_error", "messages")
    assert err["message"].startswith("messages: ")
    assert "list" in err["message"]


def test_a_mistyped_sampling_field_is_a_400_naming_it() -> None:
    exc = _validation_error({"model": "m", "messages": MESSAGES, "temperature": "hot"})
    err = validation_error_body(exc)["error"]
    assert (err["code"], err["param"]) == (400, "temperature")
    assert err["message"].startswith("temperature: ")
    assert "hot" not in err["message"]  # the offending input is not echoed


def test_a_missing_required_field_is_a_400_naming_it() -> None:
    err = validation_error_body(_validation_error({"model": "m"}))["error"]
    assert (err["code"], err["param"]) == (400, "messages")


def test_several_errors_are_all_listed_and_param_is_the_first() -> None:
    exc = _validation_error(
        {"model": "m", "messages": MESSAGES, "temperature": "hot", "max_tokens": "many"}
    )
    err = validation_error_body(exc)["error"]
    fields = [part.split(":")[0] for part in err["message"].split("; ")]
    assert sorted(fields) == ["max_tokens", "temperature"]
    assert err["param"] == fields[0]


def test_a_nested_error_names_a_readable_path() -> None:
    exc = _validation_error({"model": "m", "messages": [{"role": "user", "content": 5}]})
    err = validation_error_body(exc)["error"]
    assert err["code"] == 400
    assert err["param"].startswith("messages")
    # no pydantic-internal loc markers such as "function-wrap[...]" or "union"
    assert "[" not in err["param"].replace("[0]", "")
    assert "function" not in err["message"]


def test_at_most_ten_errors_are_reported() -> None:
    exc = _validation_error(
        {"model": "m", "messages": [{"role": "user", "content": i} for i in range(50)]}
    )
    assert len(exc.errors()) > 10
    message = validation_error_body(exc)["error"]["message"]
    assert len(message.split("; ")) == 10
