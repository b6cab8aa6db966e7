"""One eval question asked as any OpenAI client asks it: a streamed chat completion.

The reply is read from the stream as the ``openai`` SDK types it: the content
deltas (their first one is the time to first token), llmserve's ``sources``
and ``rag`` on the first chunk, and the ``url_citation`` annotations that the
finish chunk's delta carries (the SDK's ``Annotation`` type).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types.chat.chat_completion_message import Annotation

from llmserve.cli.evaluation.questions import EvalItem

DEFAULT_MODE = "default"
"""A retrieval mode that is not sent: the pipeline's own."""


@dataclass
class Reply:
    """What one question got back."""

    text: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    query: dict[str, Any] = field(default_factory=dict)
    """The answer's ``rag.query``: the mode used, the text searched, a fallback."""
    ttft_s: float | None = None
    total_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Settings:
    """How every question is asked."""

    pipeline: str
    max_tokens: int
    temperature: float


def ask(
    client: openai.OpenAI, settings: Settings, item: EvalItem, retrieval: str, query: str | None
) -> Reply:
    """Ask ``item`` with retrieval mode ``retrieval`` and query mode ``query`` (None: not
    sent). An API error is the reply's ``error``; a 404 (no such pipeline) and a
    connection error are raised, as no other question would fare better."""
    rag: dict[str, Any] = {}
    if retrieval != DEFAULT_MODE:
        rag["mode"] = retrieval
    if query is not None:
        rag["query_mode"] = query
    reply = Reply()
    started = time.perf_counter()
    try:
        stream = client.chat.completions.create(
            model=settings.pipeline,
            messages=item.messages(),  # type: ignore[arg-type]
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            stream=True,
            extra_body={"rag": rag} if rag else None,
        )
        parts: list[str] = []
        for chunk in stream:
            _read(chunk, reply, parts, started)
        reply.text = "".join(parts)
    except (openai.NotFoundError, openai.APIConnectionError):
        raise
    except openai.APIError as exc:
        reply.error = f"{type(exc).__name__}: {exc.message}"
    reply.total_s = time.perf_counter() - started
    return reply


def _read(chunk: Any, reply: Reply, parts: list[str], started: float) -> None:
    extra = chunk.model_extra or {}
    if "error" in extra:  # an error event mid-stream
        reply.error = str(extra["error"].get("message", extra["error"]))
    if isinstance(extra.get("sources"), list):
        reply.sources = extra["sources"]
    if isinstance(extra.get("rag"), dict):
        reply.query = extra["rag"].get("query") or {}
    for choice in chunk.choices:
        if choice.index != 0:
            continue
        if choice.delta.content:
            if reply.ttft_s is None:
                reply.ttft_s = time.perf_counter() - started
            parts.append(choice.delta.content)
        annotations = (choice.delta.model_extra or {}).get("annotations")
        if isinstance(annotations, list):
            reply.annotations.extend(Annotation.model_validate(a) for a in annotations)
