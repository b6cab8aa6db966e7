"""Steady chat traffic for the fault and swap tests: clients send requests back to
back (streamed and not, alternately) until stopped, and every outcome is kept."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    started: float
    ended: float
    stream: bool
    status: int | str
    retry_after: str | None = None
    error_code: int | None = None
    """The error's code: of the JSON answer, or of the SSE error event."""
    chunks: int = 0
    finish_reason: str | None = None
    done: bool = False
    text: str = ""


@dataclass
class Traffic:
    """Clients sending requests back to back until stopped; every outcome is kept."""

    url: str
    model: str
    clients: int = 4
    max_tokens: int = 64
    retries: int = 0
    """How often a request answered 503 with Retry-After, before any event, is sent
    again after that wait, as the OpenAI SDK does (2 times by default)."""
    outcomes: list[Outcome] = field(default_factory=list)
    retried: list[Outcome] = field(default_factory=list)
    """The 503s that were sent again (not in ``outcomes``: the retry's outcome is)."""

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=120) as client:
            await asyncio.gather(*(self._client(client, i, stop) for i in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, i: int, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            outcome = await self._one(client, stream=(i + n) % 2 == 0)
            for _ in range(self.retries):
                if not (outcome.status == 503 and outcome.retry_after and not outcome.chunks):
                    break
                self.retried.append(outcome)
                await asyncio.sleep(float(outcome.retry_after))
                outcome = await self._one(client, stream=outcome.stream)
            self.outcomes.append(outcome)
            if outcome.retry_after:  # as the OpenAI SDK does
                await asyncio.sleep(float(outcome.retry_after))

    async def _one(self, client: httpx.AsyncClient, stream: bool) -> Outcome:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Count to ten."}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": stream,
        }
        o = Outcome(started=time.monotonic(), ended=0.0, stream=stream, status=0)
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                o.status, o.retry_after = r.status_code, r.headers.get("retry-after")
                if r.headers.get("content-type", "").startswith("text/event-stream"):
                    async for line in r.aiter_lines():
                        _event(o, line)
                else:
                    try:
                        answer = json.loads(await r.aread())
                    except ValueError:  # not an API answer (e.g. a proxy's plain-text 500)
                        answer = {"error": {"code": r.status_code}}
                    if "error" in answer:
                        o.error_code = answer["error"].get("code")
                    else:
                        o.text = answer["choices"][0]["message"]["content"]
        except httpx.HTTPError as exc:
            o.status = type(exc).__name__
        o.ended = time.monotonic()
        return o


def _event(o: Outcome, line: str) -> None:
    if not line.startswith("data: "):
        return
    data = line[len("data: ") :]
    if data == "[DONE]":
        o.done = True
        return
    event = json.loads(data)
    if "error" in event:
        o.error_code = event["error"].get("code")
        return
    o.chunks += 1
    for choice in event.get("choices", []):
        o.text += (choice.get("delta") or {}).get("content") or ""
        o.finish_reason = choice.get("finish_reason") or o.finish_reason


def ok(o: Outcome) -> bool:
    return o.status == 200 and o.error_code is None and (not o.stream or o.done)


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Outcomes by status (and error code, and whether streamed), for the printed figures."""
    return dict(
        Counter(
            f"{o.status}{'/error ' + str(o.error_code) if o.error_code else ''}"
            f"{' sse' if o.stream else ''}"
            for o in outcomes
        )
    )
