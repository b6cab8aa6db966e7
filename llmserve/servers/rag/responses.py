"""A RAG pipeline's answer in OpenAI's Responses API shape.

The generator's own Responses answer (vLLM's ``OpenAIServingResponses``) is
passed through with the retrieval put in front of it as a
``file_search_call`` output item, the way OpenAI reports its own file search:
``queries`` holds the query and ``results`` the numbered sources (``file_id``
is the chunk id, ``filename`` the source, ``attributes`` the title and the
``[n]`` the text cites). The response object also carries ``sources`` and
``rag`` (stage timings), as a pipeline's chat answer does.

When streaming, the item is announced right after ``response.in_progress``;
every later event's ``output_index`` moves up by one and ``sequence_number``
is renumbered, so the stream stays consistent for SDKs that check either.
Unlike chat, every streamed event is rewritten.
"""

from __future__ import annotations

import uuid
from typing import Any

from llmserve.openai import sse
from llmserve.openai.errors import APIError
from llmserve.openai.messages import check_message
from llmserve.servers.protocol import Answer, Body
from llmserve.servers.rag.query import Question, split_query
from llmserve.servers.rag.shaper import Grounding, StreamEncoder

ROLES = ("user", "assistant", "system", "developer")
_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


class ResponsesShaper:
    """``shaper.Shaper`` for the Responses API."""

    def decode(self, body: Body) -> Question:
        return split_query(input_messages(body), "input")

    def generate_body(self, body: Body, model: str, messages: list[dict[str, Any]]) -> Body:
        # The instructions are the prompt's first message now.
        generate = {k: v for k, v in body.items() if k not in ("rag", "instructions")}
        generate.update(model=model, input=messages)
        return generate

    def encode_answer(self, answer: Answer, grounding: Grounding) -> Answer:
        return with_sources(answer, _search_item(grounding), grounding.fields())

    def encode_stream(self, grounding: Grounding) -> StreamEncoder:
        rewrite = SourcesInStream(_search_item(grounding), grounding.fields())
        return StreamEncoder(first=rewrite, later=rewrite)


def _search_item(grounding: Grounding) -> dict[str, Any] | None:
    """The ``file_search_call`` item, unless the request asked for no sources."""
    if grounding.sources is None:
        return None
    return file_search_item(grounding.query, grounding.sources)


def input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``instructions`` and ``input`` as chat-style messages; a 400 naming
    the first field a pipeline cannot read (``input[2]``, ``input[0].content[1].text``)."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise APIError(400, "a RAG pipeline takes text or message items as input", param="input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise APIError(400, "instructions must be a string", param="instructions")
    system = [{"role": "system", "content": instructions}] if instructions else []
    return system + [_message(item, f"input[{i}]") for i, item in enumerate(items)]


def _message(item: Any, param: str) -> dict[str, Any]:
    """One input item as a chat message: a pipeline reads message items only."""
    if isinstance(item, dict) and item.get("type", "message") != "message":
        where = f"{param}.type"
        raise APIError(400, f"{where} must be 'message': a pipeline reads messages only", where)
    check_message(item, param)
    if item["role"] not in ROLES:
        raise APIError(400, f"{param}.role must be one of {', '.join(ROLES)}", f"{param}.role")
    return {"role": item["role"], "content": item.get("content")}


def file_search_item(query: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """The retrieval as OpenAI reports its own file search: one output item."""
    return {
        "id": f"fs_{uuid.uuid4().hex}",
        "type": "file_search_call",
        "status": "completed",
        "queries": [query],
        "results": [
            {
                "file_id": s["chunk_id"],
                "filename": s["source"],
                "score": s["score"],
                "text": s["text"],
                "attributes": {"title": s["title"], "source_number": s["id"]},
            }
            for s in sources
        ],
    }


def with_sources(
    response: dict[str, Any], item: dict[str, Any] | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """A whole (non-streamed) Responses answer with the retrieval added."""
    output = list(response.get("output") or [])
    return {**response, **extra, "output": ([item] if item else []) + output}


class SourcesInStream:
    """Rewrites the generator's Responses SSE events; call it on each event."""

    def __init__(self, item: dict[str, Any] | None, extra: dict[str, Any]):
        self._item = item
        self._extra = extra
        self._next = 0

    def __call__(self, event: str) -> list[str]:
        kind, payload = sse.parse_typed_event(event)
        if kind in ("response.created", "response.in_progress", *_TERMINAL):
            response = payload.get("response")
            if isinstance(response, dict):
                payload["response"] = (
                    with_sources(response, self._item, self._extra)
                    if kind in _TERMINAL
                    else {**response, **self._extra}
                )
        if self._item is not None and isinstance(payload.get("output_index"), int):
            payload["output_index"] += 1
        out = [self._write(kind, payload)]
        if kind == "response.in_progress" and self._item is not None:
            for added in ("response.output_item.added", "response.output_item.done"):
                out.append(self._write(added, {"output_index": 0, "item": self._item}))
        return out

    def _write(self, kind: str, payload: dict[str, Any]) -> str:
        payload = {**payload, "type": kind, "sequence_number": self._next}
        self._next += 1
        return sse.typed_event(kind, payload)
