#!/usr/bin/env python
"""Replay a mixed multi-tenant load against a running server; print, per tenant, what came back.

Each tenant runs its number of clients at once; each client sends one streamed
chat request after another until the time is up. A client refused with 429
waits for its ``retry-after-ms`` (else ``Retry-After``) before the next request,
as the OpenAI SDK does, so a tenant's load is what its users would send.

    .venv/bin/python scripts/tenant_load.py --url http://127.0.0.1:8000 \\
        --model smollm2 --duration 30 \\
        --tenant interactive=$INTERACTIVE_KEY:6 --tenant batch=$BATCH_KEY:6

One row per tenant: requests sent, 200, 429, anything else, and the time to the
first content chunk (p50, p99) of the 200s, as its clients saw it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field

import httpx

QUESTION = "Write a short story about a lighthouse keeper."


@dataclass(frozen=True)
class TenantLoad:
    """``name=KEY:CLIENTS`` on the command line."""

    name: str
    key: str
    clients: int

    @classmethod
    def parse(cls, text: str) -> TenantLoad:
        name, sep, rest = text.partition("=")
        key, sep2, clients = rest.rpartition(":")
        if not (sep and sep2 and name and key and clients.isdigit() and int(clients) > 0):
            raise argparse.ArgumentTypeError(f"expected NAME=KEY:CLIENTS, got {text!r}")
        return cls(name, key, int(clients))


@dataclass
class Outcome:
    """What one tenant's clients got."""

    statuses: list[int | str] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    """Of the 200s: seconds to the first chunk with content."""

    def count(self, status: int) -> int:
        return sum(1 for s in self.statuses if s == status)


async def _one(client: httpx.AsyncClient, key: str, body: dict) -> tuple[int | str, float, float]:
    """One streamed request: (status, seconds to its first content, seconds to wait next)."""
    start = time.perf_counter()
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                await r.aread()
                return r.status_code, 0.0, _retry_after(r) if r.status_code == 429 else 0.0
            first = None
            async for line in r.aiter_lines():
                if first is None and line.startswith("data: {") and '"content"' in line:
                    chunk = json.loads(line[len("data: ") :])
                    if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                        first = time.perf_counter() - start
            return 200, first if first is not None else time.perf_counter() - start, 0.0
    except httpx.HTTPError as exc:
        return type(exc).__name__, 0.0, 1.0


def _retry_after(response: httpx.Response) -> float:
    if (ms := response.headers.get("retry-after-ms")) is not None:
        return float(ms) / 1000
    return float(response.headers.get("retry-after", "1"))


async def replay(
    url: str,
    model: str,
    tenants: list[TenantLoad],
    duration_s: float,
    max_tokens: int = 16,
    timeout_s: float = 120,
) -> dict[str, Outcome]:
    """Run every tenant's clients for ``duration_s``; what each tenant got."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    outcomes = {t.name: Outcome() for t in tenants}
    end = time.monotonic() + duration_s

    async def client_loop(client: httpx.AsyncClient, tenant: TenantLoad) -> None:
        outcome = outcomes[tenant.name]
        while time.monotonic() < end:
            status, ttft, wait = await _one(client, tenant.key, body)
            outcome.statuses.append(status)
            if status == 200:
                outcome.ttft_s.append(ttft)
            if wait:
                await asyncio.sleep(min(wait, max(0.0, end - time.monotonic())))

    total = sum(t.clients for t in tenants)
    limits = httpx.Limits(max_connections=total + 2, max_keepalive_connections=total + 2)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        await asyncio.gather(*(client_loop(client, t) for t in tenants for _ in range(t.clients)))
    return outcomes


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


def table(outcomes: dict[str, Outcome]) -> str:
    """A Markdown table: one row per tenant."""
    rows = [
        "| tenant | sent | 200 | 429 | other | success | TTFT p50 ms | TTFT p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, o in outcomes.items():
        sent, ok, refused = len(o.statuses), o.count(200), o.count(429)
        success = f"{100 * ok / sent:.1f} %" if sent else "-"
        median = f"{statistics.median(o.ttft_s) * 1000:.0f}" if o.ttft_s else "-"
        rows.append(
            f"| {name} | {sent} | {ok} | {refused} | {sent - ok - refused} | {success} "
            f"| {median} | {_ms(o.ttft_s, 0.99)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--duration", type=float, default=30, help="seconds (default 30)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument(
        "--tenant",
        type=TenantLoad.parse,
        action="append",
        required=True,
        help="NAME=KEY:CLIENTS, once per tenant",
    )
    args = parser.parse_args(argv)
    outcomes = asyncio.run(
        replay(args.url, args.model, args.tenant, args.duration, args.max_tokens)
    )
    print(table(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
