"""A seeded mutation fuzzer for the HTTP API: hostile input must be a 4xx, never a 5xx.

Each case is a valid body for one route with one mutation:

- a field replaced (or added) by a hostile value: wrong types, huge numbers, NaN,
  100k-character strings, lone surrogates, nested junk;
- or a structural one: a value nested far deeper than any real body, or a hostile
  value inside a conversation (a message, its role or content, a content part, its
  type or text), for chat ``messages`` and Responses ``input`` items alike.

Bodies are sent as raw JSON text so that values JSON cannot normally carry (NaN,
lone surrogates, 3,000 levels of nesting) reach the server as a client could send
them. ``max_tokens`` and ``max_output_tokens`` are left alone: ``null`` is a valid
"until the context is full", which on a CPU takes minutes and is not an error.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

HOSTILE = [
    None,
    0,
    -1,
    10**20,
    -(10**20),
    1e308,
    float("nan"),
    float("inf"),
    True,
    "",
    "x" * 100_000,
    "\ud800",
    "caf\udcc3",
    [],
    {},
    [[[[[]]]]],
    {"a": {"b": [1, {"c": None}]}},
    [None, 1, "two", {"three": 3}],
]


KEEP = {"max_tokens", "max_output_tokens"}

DEEP = "\x00deep\x00"
"""Stands for a deeply nested value until the body is written (``json.dumps`` recurses)."""
DEPTHS = [65, 3_000]
"""Just past the ingress's limit, and far past every recursion limit."""
CONVERSATION = ("messages", "input")
"""The fields that hold a conversation: chat's messages, Responses' input items."""
MESSAGE_KEYS = ("role", "content", "type", "name")
PART_KEYS = ("type", "text")


@dataclass(frozen=True)
class Case:
    path: str
    body: str
    what: str


def bases(model: str, pipeline: str | None, embedder: str | None, reranker: str | None):
    """Valid bodies per route, small enough that a valid one answers quickly."""
    messages = [{"role": "user", "content": "Say hi."}]
    parts = [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}]
    items = [{"type": "message", "role": "user", "content": "Say hi."}]
    item_parts = [{"role": "user", "content": [{"type": "input_text", "text": "Say hi."}]}]
    out = {
        "/v1/chat/completions": [
            {"model": model, "messages": messages, "max_tokens": 4, "temperature": 0},
            {"model": model, "messages": messages, "max_tokens": 4, "stream": True},
            {"model": model, "messages": parts, "max_tokens": 4},
        ],
        "/v1/completions": [{"model": model, "prompt": "Hello", "max_tokens": 4}],
        "/v1/responses": [
            {"model": model, "input": items, "max_output_tokens": 4},
            {"model": model, "input": item_parts, "max_output_tokens": 4, "stream": True},
        ],
    }
    if pipeline:
        rag = {"max_tokens": 4, "rag": {"top_n": 2}}
        out["/v1/chat/completions"] += [
            {"model": pipeline, "messages": messages, **rag},
            {"model": pipeline, "messages": parts, **rag},
        ]
        out["/v1/responses"].append(
            {"model": pipeline, "input": item_parts, "max_output_tokens": 4, "rag": {"top_n": 2}}
        )
        out["/v1/retrieve"] = [{"pipeline": pipeline, "query": "capital", "top_k": 3}]
    if embedder:
        out["/v1/embeddings"] = [{"model": embedder, "input": ["hello", "world"]}]
    if reranker:
        out["/v1/rerank"] = [{"model": reranker, "query": "q", "documents": ["a", "b"]}]
    return out


Mutation = Callable[[dict[str, Any], random.Random, Any], str | None]
"""Changes a body in place and says what it did; None when it does not apply to it."""


def _field(body: dict[str, Any], rng: random.Random, value: Any) -> str | None:
    """A field of the body, or (sometimes) of a message, the rag block or a list item."""
    target: Any = body
    nested = [v for v in body.values() if isinstance(v, dict | list) and v]
    if nested and rng.random() < 0.3:
        target = rng.choice(nested)
        if isinstance(target, list):
            target = target[0] if isinstance(target[0], dict) else target
    if isinstance(target, dict):
        key = rng.choice([k for k in target if k not in KEEP] + ["unexpected_field"])
        target[key] = value
        return f"{key}={_short(value)}"
    target[rng.randrange(len(target))] = value
    return f"item={_short(value)}"


def _deep(body: dict[str, Any], rng: random.Random, value: Any) -> str | None:
    key = rng.choice([k for k in body if k not in KEEP and k not in ("model", "pipeline")])
    body[key] = DEEP
    return f"{key}=<nested {{depth}} deep>"


def _conversation(body: dict[str, Any]) -> tuple[str, list[Any]] | None:
    for name in CONVERSATION:  # (an embedding's input is a list of strings)
        value = body.get(name)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return name, value
    return None


def _message(body: dict[str, Any], rng: random.Random, value: Any) -> str | None:
    found = _conversation(body)
    if found is None:
        return None
    name, messages = found
    # Before, or in place of, the question: a pipeline reads every message.
    if rng.random() < 0.5:
        messages.insert(0, value)
        return f"{name}[0]={_short(value)} (inserted)"
    messages[0] = value
    return f"{name}[0]={_short(value)}"


def _message_field(body: dict[str, Any], rng: random.Random, value: Any) -> str | None:
    found = _conversation(body)
    if found is None:
        return None
    name, messages = found
    key = rng.choice(MESSAGE_KEYS)
    messages[0][key] = value
    return f"{name}[0].{key}={_short(value)}"


def _content_part(body: dict[str, Any], rng: random.Random, value: Any) -> str | None:
    found = _conversation(body)
    if found is None or not isinstance(parts := found[1][0].get("content"), list):
        return None
    name = found[0]
    if rng.random() < 0.4:
        parts.append(value)
        return f"{name}[0].content[{len(parts) - 1}]={_short(value)}"
    key = rng.choice(PART_KEYS)
    parts[0][key] = value
    return f"{name}[0].content[0].{key}={_short(value)}"


STRUCTURAL: dict[Mutation, int] = {_deep: 1, _message: 2, _message_field: 2, _content_part: 2}
"""Each structural mutation with its weight (a conversation has more places to break)."""


def cases(seed: int, count: int, routes: dict[str, list[dict]]) -> list[Case]:
    rng = random.Random(seed)
    paths = sorted(routes)
    out = []
    while len(out) < count:
        path = paths[len(out) % len(paths)]
        body = copy.deepcopy(rng.choice(routes[path]))
        value = rng.choice(HOSTILE)
        structural = rng.choices(list(STRUCTURAL), list(STRUCTURAL.values()))[0]
        mutation = structural if rng.random() < 0.5 else _field
        what = mutation(body, rng, value)
        if what is None:
            continue  # not for this body: draw again
        text = json.dumps(body, allow_nan=True)
        if DEEP in body.values():
            depth = rng.choice(DEPTHS)
            text = text.replace(json.dumps(DEEP), _nested(depth, rng.random() < 0.5))
            what = what.format(depth=depth)
        out.append(Case(path, text, what))
    return out


def _nested(depth: int, objects: bool) -> str:
    if objects:
        return '{"a": ' * depth + "1" + "}" * depth
    return "[" * depth + "]" * depth


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 40 else f"{text[:20]}...({len(text)} chars)"


async def send(url: str, batch: list[Case], concurrency: int = 8) -> list[tuple[Case, int | str]]:
    gate = asyncio.Semaphore(concurrency)
    headers = {"Content-Type": "application/json"}

    async def one(client: httpx.AsyncClient, case: Case) -> tuple[Case, int | str]:
        async with gate:
            content = case.body.encode("utf-8", "surrogatepass")
            try:
                async with client.stream("POST", case.path, content=content, headers=headers) as r:
                    await r.aread()  # a stream must end too
                    return case, r.status_code
            except httpx.TimeoutException:
                return case, "no answer in 120 s"

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(one(client, c) for c in batch))


def server_errors(url: str, seed: int, count: int, routes: dict[str, list[dict]]) -> list[str]:
    """Run ``count`` cases; describe each one answered with a 5xx, or not at all."""
    results = asyncio.run(send(url, cases(seed, count, routes)))
    return [
        f"{c.path} {c.what} -> {status}"
        for c, status in results
        if isinstance(status, str) or status >= 500
    ]
