#!/usr/bin/env python
"""Fire N identical chat requests at once at a running server and tabulate what came back.

The overload check from the command line: every request must end (200 or 429,
never a hang or a 5xx), a 429 must come back fast, ``/health`` must keep
answering meanwhile, and the server must serve normally afterwards.

    .venv/bin/python scripts/burst.py --model rag-docs --concurrency 24 70 200
    .venv/bin/python scripts/burst.py --model smollm2 --stream --concurrency 200

The connections are opened (and answer one ``GET /health`` each) before the
burst, so the time measured is the server's: from the moment a request is
written to the moment its status line arrives, with no connection setup or
client library in it. Each level prints one row: status counts, the time to the
status line per status (p50 / p90 / p99 / max), the worst ``/health`` latency
during the burst, and ``/health`` plus one normal request afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from urllib.parse import urlparse

import httpx


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    await _read_response(reader)  # the connection is up and idle (keep-alive)
    return reader, writer


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one whole response (Content-Length or chunked); its status."""
    status = int((await reader.readline()).split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "transfer-encoding" and "chunked" in value:
            chunked = True
    if chunked:
        while size := int((await reader.readline()).strip() or b"0", 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(length)
    return status


async def _one(conn, request: bytes) -> tuple[int | str, float]:
    reader, writer = conn
    start = time.perf_counter()
    writer.write(request)
    try:
        line = await reader.readline()
        seconds = time.perf_counter() - start
        status: int | str = int(line.split()[1])
        while await reader.read(65536):  # the rest, until the server closes
            pass
    except (ConnectionError, IndexError, ValueError):
        status, seconds = "reset", time.perf_counter() - start
    writer.close()
    return status, seconds


async def _watch_health(url: str, stop: asyncio.Event) -> list[float]:
    seconds = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                ok = (await client.get("/health")).status_code == 200
            except httpx.TimeoutException:
                ok = False
            seconds.append(time.perf_counter() - start if ok else float("inf"))
            await asyncio.sleep(0.25)
    return seconds


async def burst(url: str, body: dict, n: int, api_key: str | None = None) -> dict:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    data = json.dumps(body).encode()
    request = (
        f"POST {parsed.path.rstrip('/')}/v1/chat/completions HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\nContent-Type: application/json\r\n"
        + (f"Authorization: Bearer {api_key}\r\n" if api_key else "")
        + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode() + data
    conns = await asyncio.gather(*(_open(host, port) for _ in range(n)))
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_health(url, stop))
    started = time.perf_counter()
    results = await asyncio.gather(*(_one(c, request) for c in conns))
    wall = time.perf_counter() - started
    stop.set()
    by_status: dict[int | str, list[float]] = defaultdict(list)
    for status, seconds in results:
        by_status[status].append(seconds)
    return {"n": n, "wall": wall, "by_status": by_status, "health": await watcher}


def _quantiles(values: list[float]) -> str:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"{at(0.5):.0f}/{at(0.9):.0f}/{at(0.99):.0f}/{ordered[-1] * 1000:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", default="rag-docs")
    p.add_argument("--concurrency", type=int, nargs="+", default=[24, 70, 200])
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--stream", action="store_true", help="ask for SSE streams")
    p.add_argument("--api-key", help="sent as a bearer key")
    p.add_argument("--question", default="Which placement strategies exist?")
    args = p.parse_args()
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": args.question}],
        "max_tokens": args.max_tokens,
        "stream": args.stream,
    }
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    print("| burst | statuses | ms to status p50/p90/p99/max | wall s | worst /health ms | after |")
    print("|---:|---|---|---:|---:|---|")
    for n in args.concurrency:
        row = asyncio.run(burst(args.url, body, n, args.api_key))
        after_health = httpx.get(f"{args.url}/health", timeout=30).status_code
        after = httpx.post(
            f"{args.url}/v1/chat/completions",
            json={**body, "stream": False},
            headers=headers,
            timeout=300,
        ).status_code
        by = sorted(row["by_status"].items(), key=lambda kv: str(kv[0]))
        statuses = ", ".join(f"{s}: {len(v)}" for s, v in by)
        latency = ", ".join(f"{s}: {_quantiles(v)}" for s, v in by)
        worst = max(row["health"]) * 1000 if row["health"] else float("nan")
        print(
            f"| {n} | {statuses} | {latency} | {row['wall']:.1f} | {worst:.0f} | "
            f"/health {after_health}, request {after} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
