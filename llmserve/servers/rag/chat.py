"""A pipeline's answer on ``/v1/chat/completions``: the generator's, plus ``sources``,
``rag`` and the citations as ``message.annotations``.

The generator answers the prompt as an ordinary chat completion; the client
gets that answer with the sources and the stage timings as extra top-level
fields, and each ``[n]`` marker of the answer as a ``url_citation`` annotation
(``citations.py``). A stream carries the sources on its first chunk, and each
choice's annotations in the ``delta`` of its chunk with a ``finish_reason``:
all at once, because the OpenAI SDK's stream helper merges a list of
annotations only the first time it sees the key (a second list of dicts
without ``index`` makes it raise), and because only then is it known that no
more markers will come. The chunks in between are relayed as they came, only
read: their content is found by a string search and decoded by the JSON
string scanner, not parsed as a whole (``ChatCitations``).
"""

from __future__ import annotations

from json.decoder import scanstring  # type: ignore[attr-defined]  # the C string scanner
from typing import Any

from llmserve.openai import sse
from llmserve.openai.messages import check_messages
from llmserve.servers.protocol import Answer, Body
from llmserve.servers.rag.citations import Citations, MarkerScanner
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
        answer = {**answer, **grounding.fields()}
        if grounding.citations is not None:
            answer["choices"] = [
                _annotated_choice(choice, grounding.citations)
                for choice in answer.get("choices") or []
            ]
        return answer

    def encode_stream(self, grounding: Grounding) -> StreamEncoder:
        fields = grounding.fields()
        if grounding.citations is None:
            return StreamEncoder(first=lambda event: [with_fields(event, fields)], later=None)
        stream = ChatCitations(grounding.citations)
        return StreamEncoder(first=lambda event: stream(event, fields), later=stream)


def _annotated_choice(choice: Any, citations: Citations) -> Any:
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return choice
    content = message["content"]
    annotations = [*(message.get("annotations") or []), *citations.chat_annotations(content)]
    return {**choice, "message": {**message, "annotations": annotations}}


def with_fields(event: str, fields: dict[str, Any]) -> str:
    """A ``data: {...}`` SSE event with ``fields`` added (anything else: unchanged)."""
    payload = sse.parse_data(event)
    if payload is None:
        return event
    return sse.data_text({**payload, **fields})


_CHOICE = '"choices":[{"index":'
_DELTA = '"delta":{'
_CONTENT = '"content":"'
_FINISHED = '"finish_reason":"'


class ChatCitations:
    """Reads a chat stream's content for ``[n]`` markers; annotates each finish chunk."""

    def __init__(self, citations: Citations) -> None:
        self._citations = citations
        self._scanners: dict[int, MarkerScanner] = {}

    def __call__(self, event: str, fields: dict[str, Any] | None = None) -> list[str]:
        """``fields``: top-level fields to add (the first event's sources and ``rag``)."""
        if fields is None and (read := _read(event)) is not None:
            index, content, finished = read
            if not finished:  # the hot path: read, relayed as it came
                if content:
                    self._scanner(index).feed(content)
                return [event]
        payload = sse.parse_data(event)
        if payload is None:
            return [event]
        changed = fields is not None
        if fields is not None:
            payload.update(fields)
        for choice in payload.get("choices") or []:
            changed = self._read_choice(choice) or changed
        return [sse.data_text(payload) if changed else event]

    def _scanner(self, index: int) -> MarkerScanner:
        scanner = self._scanners.get(index)
        if scanner is None:
            scanner = self._scanners[index] = MarkerScanner()
        return scanner

    def _read_choice(self, choice: Any) -> bool:
        """Feed a parsed choice's content; a finished one gets its annotations (True)."""
        if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
            return False
        delta, index = choice["delta"], choice.get("index", 0)
        if isinstance(delta.get("content"), str):
            self._scanner(index).feed(delta["content"])
        if choice.get("finish_reason") is None:
            return False
        found = self._scanner(index).found
        delta["annotations"] = self._citations.chat_annotations_of(found)
        return True


def _read(event: str) -> tuple[int, str, bool] | None:
    """``(choice index, content, finished)`` of a one-choice chunk as vLLM writes it,
    without parsing it; None when it is laid out otherwise (parse it then)."""
    at = event.find(_CHOICE)
    if at < 0 or event.find('},{"index":', at) >= 0:
        return None
    digits = at + len(_CHOICE)
    end = event.find(",", digits)
    if end < 0 or not event[digits:end].isdigit():
        return None
    delta = event.find(_DELTA, end)
    if delta < 0:
        return None
    # ``content`` is the delta's first key, or its second after ``role``.
    content = event.find(_CONTENT, delta, delta + len(_DELTA) + 40)
    text = scanstring(event, content + len(_CONTENT))[0] if content >= 0 else ""
    return int(event[digits:end]), text, event.find(_FINISHED, delta) >= 0
