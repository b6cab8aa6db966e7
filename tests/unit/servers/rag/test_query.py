"""The question of a conversation: the last user message, and the history before it."""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.openai.errors import APIError
from llmserve.servers.rag.query import Question, non_empty, split_query

pytestmark = pytest.mark.unit


def test_the_question_is_the_last_user_message_and_the_history_what_came_before() -> None:
    parts = [
        {"type": "text", "text": "what is"},
        {"type": "image_url", "text": 5},
        {"type": "input_text", "text": "an index?"},
    ]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": parts},
        {"role": "assistant", "content": "a trailing answer"},
    ]
    # Only text parts count: an image part's "text" is not the question's.
    assert split_query(messages, "messages") == Question("what is an index?", messages[:4])


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "a RAG pipeline needs a user message"),
        ([{"role": "assistant", "content": "hi"}], "a RAG pipeline needs a user message"),
        ([{"role": "user", "content": " \n"}], "the query is empty"),
        ([{"role": "user", "content": None}], "the query is empty"),
        ([{"role": "user", "content": "q"}, {"role": "user", "content": ""}], "the query is empty"),
    ],
)
def test_a_conversation_without_a_question_is_400_naming_the_field(
    messages: list[Any], message: str
) -> None:
    with pytest.raises(APIError) as err:
        split_query(messages, "input")
    assert (err.value.status, err.value.param, err.value.message) == (400, "input", message)


def test_a_query_is_stripped() -> None:
    assert non_empty("  where?\n", "query") == "where?"
