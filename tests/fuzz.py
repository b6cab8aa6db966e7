"""A seeded mutation fuzzer for the HTTP API: hostile input must be a 4xx, never a 5xx.

Each case is a valid body for one route with one field replaced (or added) by a
hostile value: wrong types, huge numbers, NaN, 100k-character strings, lone
surrogates, nested junk. Bodies are sent as raw JSON text so that values JSON
cannot normally carry (NaN, lone surrogates) reach the server as a client could
send them. ``max_tokens`` is left alone: ``null`` is a valid "until the context
is full", which on a CPU takes minutes and is not an error.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from dataclasses import dataclass

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


KEEP = {"max_tokens"}


@dataclass(frozen=True)
class Case:
    path: str
    body: str
    what: str


def bases(model: str, pipeline: str | None, embedder: str | None, reranker: str | None):
    """Valid bodies per route, small enough that a valid one answers quickly."""
    messages = [{"role": "user", "content": "Say hi."}]
    out = {
        "/v1/chat/completions": [
            {"model": model, "messages": messages, "max_tokens": 4, "temperature": 0},
            {"model": model, "messages": messages, "max_tokens": 4, "stream": True},
        ],
        "/v1/completions": [{"model": model, "prompt": "Hello", "max_tokens": 4}],
    }
    if pipeline:
        out["/v1/chat/completions"].append(
            {"model": pipeline, "messages": messages, "max_tokens": 4, "rag": {"top_n": 2}}
        )
        out["/v1/retrieve"] = [{"pipeline": pipeline, "query": "capital", "top_k": 3}]
    if embedder:
        out["/v1/embeddings"] = [{"model": embedder, "input": ["hello", "world"]}]
    if reranker:
        out["/v1/rerank"] = [{"model": reranker, "query": "q", "documents": ["a", "b"]}]
    return out


def cases(seed: int, count: int, routes: dict[str, list[dict]]) -> list[Case]:
    rng = random.Random(seed)
    paths = sorted(routes)
    out = []
    for i in range(count):
        path = paths[i % len(paths)]
        body = copy.deepcopy(rng.choice(routes[path]))
        target = body
        # Sometimes go one level down (a message, the rag block, a list item).
        nested = [v for v in body.values() if isinstance(v, dict | list) and v]
        if nested and rng.random() < 0.3:
            target = rng.choice(nested)
            if isinstance(target, list):
                target = target[0] if isinstance(target[0], dict) else target
        value = rng.choice(HOSTILE)
        if isinstance(target, dict):
            key = rng.choice([k for k in target if k not in KEEP] + ["unexpected_field"])
            target[key] = value
            what = f"{key}={_short(value)}"
        else:
            target[rng.randrange(len(target))] = value
            what = f"item={_short(value)}"
        out.append(Case(path, json.dumps(body, allow_nan=True), what))
    return out


def _short(value) -> str:
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
