"""Server-sent events as OpenAI's APIs write them: the one place that encodes and parses them.

Chat and completions streams are ``data: {json}`` events ending in
``data: [DONE]``; Responses streams are typed ``event: <type>`` / ``data:
{json}`` pairs. vLLM renders the engine's events itself and the ingress relays
them as bytes; only what llmserve adds or rewrites (error events, a RAG
answer's sources, a resumed stream's chunks) goes through here.
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"
_DATA = "data: "
ERROR_PREFIXES = ('data: {"error"', "event: error")
"""How vLLM starts an error event in a chat/completions or a Responses stream."""


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def data(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event, as bytes for the client."""
    return (_DATA + _dumps(payload) + "\n\n").encode()


def data_text(payload: dict[str, Any]) -> str:
    """One ``data:`` event, as the ``str`` a server yields across a handle."""
    return _DATA + _dumps(payload) + "\n\n"


def typed_event(kind: str, payload: dict[str, Any]) -> str:
    """One Responses API event: ``event: <kind>`` and its ``data:``."""
    return f"event: {kind}\n{_DATA}{_dumps(payload)}\n\n"


def parse_data(event: str) -> dict[str, Any] | None:
    """The JSON object of a ``data: {...}`` event; None for ``[DONE]`` or anything else."""
    if not event.startswith(_DATA + "{"):
        return None
    payload = json.loads(event[len(_DATA) :])
    return payload if isinstance(payload, dict) else None


def parse_typed_event(event: str) -> tuple[str, dict[str, Any]]:
    """``(type, payload)`` of a Responses event (``event: <type>`` / ``data: {...}``)."""
    line = next(line for line in event.splitlines() if line.startswith(_DATA))
    payload = json.loads(line[len(_DATA) :])
    return str(payload.get("type", "unknown")), payload


def is_error(event: str) -> bool:
    """Whether a streamed event is an error event (vLLM's or ours)."""
    return event.startswith(ERROR_PREFIXES)
