"""Type checks of chat messages and their content parts, naming the exact field.

A RAG pipeline reads a conversation itself (the question, the history it passes
on) before its generator's vLLM request model ever sees it: it must refuse what
it cannot read with a 400 that names the field (``messages[0]``,
``messages[1].content[0].text``, ``input[2].role``), before it retrieves or
reranks anything. vLLM's own models are no help there: importing them pulls in
torch (14-40 s and 550 MB in a router replica that has no engine, measured on a
loaded 2-core machine, against 1.3 s and 60 MB for ``transformers``, which a
router imports anyway), they accept a text part whose ``text`` is a number, and
their errors name a union member (``messages.0.ChatCompletionDeveloperMessageParam``)
instead of the field.

Only what a reader of the conversation relies on is checked: each message an
object with a string ``role``; its ``content`` a string, null, or a list of
parts, each an object with a string ``type`` and, for a text part, a string
``text``. Everything else is the generator's to validate.
"""

from __future__ import annotations

from typing import Any

from llmserve.openai.errors import APIError

TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
"""Content part types that carry ``text``: chat's, and the Responses API's."""


def _refuse(param: str, problem: str) -> APIError:
    return APIError(400, f"{param} {problem}", param=param)


def check_messages(messages: Any, param: str = "messages") -> list[dict[str, Any]]:
    """``messages`` when it is a list of messages that can be read; else a 400 naming the
    first field that cannot (``param`` is where the list came from)."""
    if not isinstance(messages, list):
        raise _refuse(param, "must be a list of chat messages")
    for i, message in enumerate(messages):
        check_message(message, f"{param}[{i}]")
    return messages


def check_message(message: Any, param: str) -> dict[str, Any]:
    """One message: an object with a string ``role`` and readable ``content``."""
    if not isinstance(message, dict):
        raise _refuse(param, "must be an object with a role and content")
    if not isinstance(message.get("role"), str):
        raise _refuse(f"{param}.role", "must be a string")
    check_content(message.get("content"), f"{param}.content")
    return message


def check_content(content: Any, param: str) -> None:
    """A message's content: a string, null, or a list of typed parts."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _refuse(param, "must be a string or a list of content parts")
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _refuse(where, "must be an object with a type")
        kind = part.get("type")
        if not isinstance(kind, str):
            raise _refuse(f"{where}.type", "must be a string")
        if kind in TEXT_PARTS and not isinstance(part.get("text"), str):
            raise _refuse(f"{where}.text", "must be a string")


def text_of(content: Any) -> str:
    """The text of checked content: the string, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if p.get("type") in TEXT_PARTS)
    return ""
