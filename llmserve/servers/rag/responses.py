"""A RAG pipeline's answer in OpenAI's Responses API shape.

The generator's own Responses answer (vLLM's ``OpenAIServingResponses``) is
passed through with the retrieval put in front of it as a
``file_search_call`` output item, the way OpenAI reports its own file search:
``queries`` holds the query and ``results`` the numbered sources (``file_id``
is the chunk id, ``filename`` the source, ``attributes`` the title and the
``[n]`` the text cites). Each ``[n]`` of the answer that names a source is a
``file_citation`` annotation of its ``output_text`` (``file_id`` the chunk id,
as in the results; ``index`` where the marker starts). The response object
also carries ``sources`` and ``rag`` (stage timings), as a pipeline's chat
answer does.

When streaming, the item is announced right after ``response.in_progress``;
every later event's ``output_index`` moves up by one and ``sequence_number``
is renumbered, so the stream stays consistent for SDKs that check either.
A ``response.output_text.annotation.added`` event follows the delta that
completes each marker, as OpenAI orders them, and the done events carry the
same annotations. Unlike chat, every streamed event is rewritten.
"""

from __future__ import annotations

import uuid
from typing import Any

from llmserve.openai import sse
from llmserve.openai.errors import APIError
from llmserve.openai.messages import check_message
from llmserve.servers.protocol import Answer, Body
from llmserve.servers.rag.citations import Citations, MarkerScanner
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
        return with_sources(
            answer, _search_item(grounding), grounding.fields(), grounding.citations
        )

    def encode_stream(self, grounding: Grounding) -> StreamEncoder:
        rewrite = SourcesInStream(_search_item(grounding), grounding.fields(), grounding.citations)
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
    response: dict[str, Any],
    item: dict[str, Any] | None,
    extra: dict[str, Any],
    citations: Citations | None = None,
    count: bool = True,
) -> dict[str, Any]:
    """A whole Responses answer with the retrieval added (and its citations annotated;
    ``count``: add them to the citation metric, which a stream already did)."""
    output = [annotated(o, citations, count) for o in response.get("output") or []]
    return {**response, **extra, "output": ([item] if item else []) + output}


def annotated(item: Any, citations: Citations | None, count: bool) -> Any:
    """An output item; a message's ``output_text`` parts with their markers annotated."""
    if citations is None or not isinstance(item, dict) or item.get("type") != "message":
        return item
    content = item.get("content")
    if not isinstance(content, list):
        return item
    return {**item, "content": [annotated_part(p, citations, count) for p in content]}


def annotated_part(part: Any, citations: Citations, count: bool) -> Any:
    """An ``output_text`` content part with its markers' ``file_citation`` annotations."""
    if not isinstance(part, dict) or part.get("type") != "output_text":
        return part
    text = part.get("text")
    if not isinstance(text, str):
        return part
    annotations = [*(part.get("annotations") or []), *citations.file_annotations(text, count)]
    return {**part, "annotations": annotations}


class SourcesInStream:
    """Rewrites the generator's Responses SSE events; call it on each event."""

    def __init__(
        self,
        item: dict[str, Any] | None,
        extra: dict[str, Any],
        citations: Citations | None = None,
    ):
        self._item = item
        self._extra = extra
        self._citations = citations
        self._scanners: dict[tuple[Any, Any], MarkerScanner] = {}
        self._annotations: dict[tuple[Any, Any], int] = {}
        self._next = 0

    def __call__(self, event: str) -> list[str]:
        kind, payload = sse.parse_typed_event(event)
        if kind in ("response.created", "response.in_progress", *_TERMINAL):
            response = payload.get("response")
            if isinstance(response, dict):
                payload["response"] = (
                    with_sources(response, self._item, self._extra, self._citations, False)
                    if kind in _TERMINAL
                    else {**response, **self._extra}
                )
        elif self._citations is not None:
            if kind == "response.content_part.done":
                payload["part"] = annotated_part(payload.get("part"), self._citations, False)
            elif kind == "response.output_item.done":
                payload["item"] = annotated(payload.get("item"), self._citations, False)
        if self._item is not None and isinstance(payload.get("output_index"), int):
            payload["output_index"] += 1
        out = [self._write(kind, payload)]
        if kind == "response.in_progress" and self._item is not None:
            for added in ("response.output_item.added", "response.output_item.done"):
                out.append(self._write(added, {"output_index": 0, "item": self._item}))
        elif kind == "response.output_text.delta" and self._citations is not None:
            annotations = self._added(self._citations, payload)
            out.extend(self._write(name, event) for name, event in annotations)
        return out

    def _added(
        self, citations: Citations, delta: dict[str, Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The ``annotation.added`` events of the markers a text delta completes."""
        text = delta.get("delta")
        if not isinstance(text, str):
            return []
        part = (delta.get("item_id"), delta.get("content_index"))
        scanner = self._scanners.get(part)
        if scanner is None:
            scanner = self._scanners[part] = MarkerScanner()
        events = []
        for marker, source in citations.valid(scanner.feed(text)):
            number = self._annotations.get(part, 0)
            self._annotations[part] = number + 1
            event = {
                "item_id": delta.get("item_id"),
                "output_index": delta.get("output_index"),
                "content_index": delta.get("content_index"),
                "annotation_index": number,
                "annotation": citations.file_citation(marker, source),
            }
            events.append(("response.output_text.annotation.added", event))
        return events

    def _write(self, kind: str, payload: dict[str, Any]) -> str:
        payload = {**payload, "type": kind, "sequence_number": self._next}
        self._next += 1
        return sse.typed_event(kind, payload)
