"""The bounded Responses store: vLLM's two dicts as one store, within a count and a size."""

from __future__ import annotations

import pytest

from llmserve.servers.responses_store import ResponsesStore, json_size

pytestmark = pytest.mark.unit


def _response(id_: str, text: str = "hi"):
    """A real vLLM Responses answer, as vLLM stores it."""
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest, ResponsesResponse
    from vllm.sampling_params import SamplingParams

    request = ResponsesRequest(model="m", input=text, request_id=id_)
    return ResponsesResponse.from_request(
        request, SamplingParams(), model_name="m", created_time=0, output=[], status="completed"
    )


def _messages(text: str = "hi") -> list[dict]:
    return [{"role": "user", "content": text}]


def _put(store: ResponsesStore, id_: str, text: str = "hi") -> None:
    """What vLLM does for one stored request: its messages first, its answer at the end."""
    store.messages[id_] = _messages(text)
    store.responses[id_] = _response(id_, text)


def test_a_response_and_its_messages_are_one_entry() -> None:
    store = ResponsesStore(max_responses=10, max_bytes=10**6)
    _put(store, "a")
    assert len(store) == 1
    assert store.responses.get("a").id == "a"
    assert store.messages["a"] == _messages()
    assert store.bytes == json_size(_response("a")) + json_size(_messages())
    assert "b" not in store.responses and store.responses.get("b") is None


def test_past_the_count_the_oldest_are_dropped_with_their_messages() -> None:
    store = ResponsesStore(max_responses=2, max_bytes=10**6)
    for id_ in "abc":
        _put(store, id_)
    assert list(store.responses) == ["b", "c"]
    assert list(store.messages) == ["b", "c"]
    assert len(store) == 2
    assert store.bytes == 2 * (json_size(_response("b")) + json_size(_messages()))


def test_past_the_size_the_oldest_are_dropped() -> None:
    one = json_size(_response("a", "x" * 100)) + json_size(_messages("x" * 100))
    store = ResponsesStore(max_responses=100, max_bytes=3 * one)
    for id_ in "abcde":
        _put(store, id_, "x" * 100)
    assert list(store.responses) == ["c", "d", "e"]
    assert store.bytes == 3 * one <= store.max_bytes


def test_a_write_makes_an_entry_the_newest() -> None:
    """A request whose messages were stored first is not dropped before its answer lands."""
    store = ResponsesStore(max_responses=2, max_bytes=10**6)
    store.messages["slow"] = _messages()  # a long generation starts
    _put(store, "a")
    store.responses["slow"] = _response("slow")  # ... and ends
    _put(store, "b")
    assert list(store.responses) == ["slow", "b"]


def test_an_entry_larger_than_the_size_bound_is_not_kept() -> None:
    store = ResponsesStore(max_responses=10, max_bytes=200)
    _put(store, "big", "x" * 500)
    assert len(store) == 0 and store.bytes == 0
    assert "big" not in store.responses and "big" not in store.messages


def test_deleting_keeps_the_accounting() -> None:
    store = ResponsesStore(max_responses=10, max_bytes=10**6)
    _put(store, "a")
    del store.messages["a"]
    assert store.bytes == json_size(_response("a")) and len(store) == 1
    del store.responses["a"]
    assert store.bytes == 0 and len(store) == 0
    _put(store, "b")
    store.responses["b"] = _response("b", "longer text")  # replaced, not added
    assert store.bytes == json_size(_response("b", "longer text")) + json_size(_messages())


def test_harmony_messages_are_sized_by_their_dicts() -> None:
    class Message:  # like openai_harmony.Message
        def to_dict(self) -> dict:
            return {"role": "user", "content": [{"type": "text", "text": "hé"}]}

    assert json_size([Message()]) == len(
        '[{"role": "user", "content": [{"type": "text", "text": "hé"}]}]'.encode()
    )


def test_a_response_whose_messages_were_dropped_meanwhile_is_not_kept() -> None:
    """Continued without its input messages it would have the wrong context."""
    store = ResponsesStore(max_responses=2, max_bytes=10**6)
    store.messages["slow"] = _messages()  # a long generation starts
    _put(store, "a")
    _put(store, "b")  # "slow" is the oldest: dropped
    store.responses["slow"] = _response("slow")  # ... and its generation ends
    assert "slow" not in store.responses and "slow" not in store.messages
    assert list(store.responses) == ["a", "b"] and len(store) == 2
    assert store.bytes == 2 * (json_size(_response("a")) + json_size(_messages()))
