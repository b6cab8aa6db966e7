"""A pipeline's answer on ``/v1/chat/completions``: the generator's, plus ``sources`` and ``rag``.

The generator answers the prompt as an ordinary chat completion; the client
gets that answer with the sources and the stage timings as extra top-level
fields. A stream carries them on its first chunk only, so only that event is
parsed and rewritten: every later one passes through untouched, at no cost.
"""

from __future__ import annotations

from typing import Any

from llmserve.openai import sse
from llmserve.openai.messages import check_messages
from llmserve.servers.protocol import Answer, Body
from llmserve.servers.rag.query import Question, split_query
from llmserve.servers.rag.shaper import Grounding, StreamEncoder


class ChatShaper:
    """``shaper.Shaper`` for chat completions."""

    def decode(self, body: Body) -> Question:
        return split_query(check_messages(body.get("messages")), "messages")

    def generate_body(self, body: Body, model: str, messages: list[dict[str, Any]]) -> Body:
        generate = {k: v for k, v in body.items() if k != "rag"}
        generate.update(model=model, messages=messages)
        return generate

    def encode_answer(self, answer: Answer, grounding: Grounding) -> Answer:
        return {**answer, **grounding.fields()}

    def encode_stream(self, grounding: Grounding) -> StreamEncoder:
        fields = grounding.fields()
        return StreamEncoder(first=lambda event: [with_fields(event, fields)], later=None)


def with_fields(event: str, fields: dict[str, Any]) -> str:
    """A ``data: {...}`` SSE event with ``fields`` added (anything else: unchanged)."""
    payload = sse.parse_data(event)
    if payload is None:
        return event
    return sse.data_text({**payload, **fields})
