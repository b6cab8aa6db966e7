"""Type checks of chat messages: what a pipeline cannot read is a 400 naming the exact field."""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.openai.errors import APIError
from llmserve.openai.messages import check_messages, text_of

pytestmark = pytest.mark.unit

HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ("hi", "messages"),
        ({"role": "user"}, "messages"),
        ([5, HI], "messages[0]"),
        ([HI, None], "messages[1]"),
        ([HI, ["user", "hi"]], "messages[1]"),
        ([{"content": "hi"}], "messages[0].role"),
        ([{"role": 1, "content": "hi"}], "messages[0].role"),
        ([{"role": "user", "content": 5}], "messages[0].content"),
        ([{"role": "user", "content": {"type": "text"}}], "messages[0].content"),
        ([HI, {"role": "user", "content": ["hi"]}], "messages[1].content[0]"),
        ([{"role": "user", "content": [{"text": "hi"}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"type": 3}]}], "messages[0].content[0].type"),
        (
            [
                HI,
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": 123}],
                },
            ],
            "messages[1].content[1].text",
        ),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "messages[0].content[0].text"),
        (
            [{"role": "user", "content": [{"type": "output_text", "text": []}]}],
            "messages[0].content[0].text",
        ),
    ],
)
def test_a_message_that_cannot_be_read_is_400_naming_the_field(messages: Any, param: str) -> None:
    with pytest.raises(APIError) as err:
        check_messages(messages)
    assert (err.value.status, err.value.param) == (400, param)
    assert err.value.message.startswith(f"{param} must be")


def test_what_can_be_read_passes_untouched() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
        {"role": "custom-role", "content": "vLLM takes any role"},
    ]
    assert check_messages(messages) is messages


def test_the_text_of_content_is_its_text_parts() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "text": 5},
        {"type": "output_text", "text": "b"},
    ]
    assert text_of(parts) == "a b"
    assert text_of("plain") == "plain"
    assert text_of(None) == ""
