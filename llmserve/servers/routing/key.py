"""What a request's prompt will share with others in the engine's prefix cache.

vLLM caches the KV of whole token blocks of the *rendered* prompt, keyed by
the tokens before them, the LoRA adapter and the request's ``cache_salt``.
The router runs in the caller's process, before the replica renders
anything, and has no tokenizer, so it keys on a faithful proxy: a canonical
serialisation of what the chat template renders, in the order it renders it
(tools, then each message's role and content). The chat template is a
deterministic function of the messages (and tools), so two requests whose
messages agree up to some point render prompts that agree up to that point,
modulo the template's own header, which is the same for all (and a few
templates' quirks, such as a date in the header or earlier turns' reasoning
dropped, which cost a cache miss, never a wrong answer). A character of this
text is not a token, but a shared prefix of it is a shared prefix of tokens,
save the last few.

The ``scope`` in front keeps apart what the engine never shares: another
model (a LoRA adapter), another ``cache_salt`` (another tenant), another
template or rendering, and raw ``/v1/completions`` prompts, which no
template renders.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any

from llmserve.servers.protocol import MAX_SESSION_CHARS, Body, Endpoint, RequestMeta

_SEP = "\x1f"  # between the fields of one message
_END = "\x1e"  # after each message; neither occurs in JSON text or normal prose

# Body fields that change how the template renders the same messages.
_RENDERING = ("chat_template", "chat_template_kwargs", "add_generation_prompt",
              "continue_final_message", "documents")  # fmt: skip


@dataclass(frozen=True, slots=True)
class RoutingKey:
    """One request, as the router sees it."""

    scope: str
    """What must match exactly for any cache sharing (model, salt, rendering)."""
    text: str
    """``scope`` followed by the canonical prompt, cut at the router's limit."""
    session: str | None = None
    """The session to keep together (only with session affinity)."""
    adapter: str | None = None
    """The LoRA adapter asked for; None for the base model."""

    @property
    def content_chars(self) -> int:
        """Characters of the prompt itself (``text`` less ``scope``)."""
        return len(self.text) - len(self.scope)


def routing_key(
    endpoint: Any,
    body: Any,
    meta: Any,
    *,
    base_model: str | None,
    max_chars: int,
    sessions: bool = False,
) -> RoutingKey | None:
    """The key of one ``respond(endpoint, body, meta)`` call; None when its prompt is
    unknown or uses no cache (tokenize, detokenize, a body of the wrong shape: the
    server answers those, the router only load-balances them)."""
    if not isinstance(body, dict):
        return None
    if endpoint in (Endpoint.CHAT, Endpoint.RESPONSES):
        family = "chat"
        parts = _chat_parts(body) if endpoint is Endpoint.CHAT else _responses_parts(body)
    elif endpoint is Endpoint.COMPLETIONS:
        family, parts = "text", _completion_parts(body)
    else:
        return None
    if parts is None:
        return None
    model = body.get("model")
    model = model if isinstance(model, str) else ""
    salt = body.get("cache_salt")
    salt = salt if isinstance(salt, str) else ""
    scope = _SEP.join((family, model, _digest(salt), _rendering(body))) + _END
    text = _join(scope, parts, max_chars + len(scope))
    return RoutingKey(
        scope=scope,
        text=text,
        session=_session(body, meta) if sessions else None,
        adapter=model if model and base_model is not None and model != base_model else None,
    )


def _digest(value: str) -> str:
    """A salt is a secret of its tenant: the key holds a hash of it, never the salt."""
    return hashlib.blake2b(value.encode(), digest_size=8).hexdigest() if value else ""


def _rendering(body: Body) -> str:
    present = {name: body[name] for name in _RENDERING if name in body}
    return _digest(_canonical(present)) if present else ""


def _session(body: Body, meta: Any) -> str | None:
    if isinstance(meta, RequestMeta) and meta.session:
        return "h:" + meta.session
    user = body.get("user")
    if isinstance(user, str) and 0 < len(user) <= MAX_SESSION_CHARS:
        return "u:" + user
    return None


def _join(scope: str, parts: Iterable[str], limit: int) -> str:
    """``scope`` and ``parts``, cut at ``limit`` characters; later parts are never built."""
    out, size = [scope], len(scope)
    for part in parts:
        if size >= limit:
            break
        out.append(part)
        size += len(part)
    return "".join(out)[:limit]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _content(value: Any) -> str:
    """A message's content as text: strings as they are, text parts' text, other
    parts (images, audio, files) as their canonical JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            part["text"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else _canonical(part)
            for part in value
        )
    return "" if value is None else _canonical(value)


def _message(message: Any) -> str:
    if not isinstance(message, dict):
        return _canonical(message) + _END
    if "role" not in message and message.get("type") not in (None, "message"):
        return _canonical(message) + _END  # a Responses item: function call, its output, ...
    fields = [str(message.get("role", "")), _content(message.get("content"))]
    for extra in ("name", "tool_calls", "tool_call_id", "reasoning_content"):
        if message.get(extra) is not None:
            value = message[extra]
            fields.append(value if isinstance(value, str) else _canonical(value))
    return _SEP.join(fields) + _END


def _tools(body: Body) -> list[str]:
    tools = body.get("tools")
    return [_canonical(tools) + _END] if tools else []


def _chat_parts(body: Body) -> Iterable[str] | None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    return chain(_tools(body), map(_message, messages))


def _responses_parts(body: Body) -> Iterable[str] | None:
    """In the order vLLM builds the conversation: instructions, the stored one, input."""
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list):
        return None
    parts = _tools(body)
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        parts.append(_message({"role": "system", "content": instructions}))
    previous = body.get("previous_response_id")
    if isinstance(previous, str):
        parts.append(_SEP.join(("previous", previous)) + _END)
    return chain(parts, map(_message, items))


def _completion_parts(body: Body) -> Iterable[str] | None:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch of prompts: key on the first
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return [",".join(map(str, prompt))]  # token ids
    return None
