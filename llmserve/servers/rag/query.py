"""The question a RAG pipeline searches for, taken from a conversation.

Both APIs a pipeline answers give it chat-style messages (chat's ``messages``,
or Responses' ``instructions`` and ``input`` turned into them); the question
is the last user message, and what came before it is the history the
generator sees. It lives apart from the API shapers so that both refuse a
conversation without a question the same way, naming their own field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmserve.openai.errors import APIError
from llmserve.openai.messages import text_of


@dataclass(frozen=True, slots=True)
class Question:
    """What a request asks: the text to search for, and the messages before it."""

    text: str
    history: list[Any]


def split_query(messages: list[dict[str, Any]], param: str) -> Question:
    """The last user message's text (the query) and the messages before it.

    ``messages`` have passed ``openai.messages.check_messages``; ``param`` names the
    request field they came from, for the 400.
    """
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise APIError(400, "a RAG pipeline needs a user message", param=param)
    text = non_empty(text_of(messages[last_user].get("content")), param)
    return Question(text, messages[:last_user])


def non_empty(text: str, param: str) -> str:
    """``text`` stripped; a 400 naming ``param`` when nothing is left to search for."""
    if not text.strip():
        raise APIError(400, "the query is empty", param=param)
    return text.strip()
