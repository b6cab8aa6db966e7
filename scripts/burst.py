#!/usr/bin/env python
"""Fire N identical chat requests at once at a running server and tabulate what came back.

The overload check from the command line: every request must end (200 or 429,
never a hang or a 5xx), ``/health`` must keep answering meanwhile, and the
server must serve normally afterwards.

    .venv/bin/python scripts/burst.py --model rag-docs --concurrency 24 70 200

Each level prints one row: status counts, latency p50/max per status, the
worst ``/health`` latency during the burst, and ``/health`` plus one normal
request afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict

import httpx


async def _one(client: httpx.AsyncClient, body: dict) -> tuple[int | str, float]:
    start = time.perf_counter()
    try:
        response = await client.post("/v1/chat/completions", json=body)
        status: int | str = response.status_code
    except httpx.TimeoutException:
        status = "timeout"
    return status, time.perf_counter() - start


async def _watch_health(client: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    seconds = []
    while not stop.is_set():
        start = time.perf_counter()
        try:
            ok = (await client.get("/health")).status_code == 200
        except httpx.TimeoutException:
            ok = False
        seconds.append(time.perf_counter() - start if ok else float("inf"))
        await asyncio.sleep(0.25)
    return seconds


async def burst(url: str, body: dict, n: int, timeout_s: float) -> dict:
    limits = httpx.Limits(max_connections=n + 2)
    async with (
        httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client,
        httpx.AsyncClient(base_url=url, timeout=timeout_s) as probe,
    ):
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_health(probe, stop))
        started = time.perf_counter()
        results = await asyncio.gather(*(_one(client, body) for _ in range(n)))
        wall = time.perf_counter() - started
        stop.set()
        health = await watcher
        after_health = (await probe.get("/health")).status_code
        after = (await probe.post("/v1/chat/completions", json=body)).status_code
    by_status = defaultdict(list)
    for status, seconds in results:
        by_status[status].append(seconds)
    return {"n": n, "wall": wall, "by_status": by_status, "health": health}, after_health, after


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}/{max(values) * 1000:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="rag-docs")
    p.add_argument("--concurrency", type=int, nargs="+", default=[24, 70, 200])
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--timeout", type=float, default=400, help="client timeout per request, s")
    p.add_argument("--question", default="Which placement strategies exist?")
    args = p.parse_args()
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": args.question}],
        "max_tokens": args.max_tokens,
    }
    print("| burst | statuses | p50/max ms per status | wall s | worst /health ms | after |")
    print("|---:|---|---|---:|---:|---|")
    for n in args.concurrency:
        row, after_health, after = asyncio.run(burst(args.url, body, n, args.timeout))
        statuses = ", ".join(f"{s}: {len(v)}" for s, v in sorted(row["by_status"].items(), key=str))
        latency = ", ".join(f"{s}: {_ms(v)}" for s, v in sorted(row["by_status"].items(), key=str))
        worst = max(row["health"]) * 1000 if row["health"] else float("nan")
        print(
            f"| {n} | {statuses} | {latency} | {row['wall']:.1f} | {worst:.0f} | "
            f"/health {after_health}, request {after} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
