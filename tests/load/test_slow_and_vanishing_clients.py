"""Clients that stop reading, or vanish at any point, never keep a slot or engine work.

Raw sockets (not an HTTP client library) so that a test can do what a hostile or
broken client does: never read a byte, or reset the connection in the middle of
sending its request, while it waits in the queue, before the first byte of the
answer, or mid-stream. Afterwards the ingress's admission gauges and every
engine's running-requests gauge must be back to 0, and each route serves again.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.load.conftest import CAPACITY, LIMITS, SEND_TIMEOUT_S

QUESTION = [{"role": "user", "content": "Tell me a long story."}]
# Every chunk carries 4 choices with 20 alternatives per token: the buffers between a
# client and the ingress (hundreds of KB) fill after some dozens of tokens, not never.
HEAVY_STREAM = {
    "stream": True,
    "n": 4,
    "max_tokens": 1900,
    "ignore_eos": True,
    "logprobs": True,
    "top_logprobs": 20,
}
ENGINES = ("tiny", "tiny-remote", "minilm", "minilm-rerank")
GATED = ("tiny", "rag")  # served in the ingress process, behind its admission gates


def _request(url: str, path: str, body: dict) -> bytes:
    host = urlparse(url).netloc
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


def _connect(url: str, rcvbuf: int | None = None) -> socket.socket:
    parsed = urlparse(url)
    sock = socket.socket()
    if rcvbuf is not None:  # before connect, so the window the server sees stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((parsed.hostname, parsed.port))
    return sock


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a crashed client or a dropped network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _gauges(url: str) -> dict[str, float]:
    """Admitted (running + waiting) per gated id, and vLLM's running requests per engine."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    out = {f"admitted:{m}": 0.0 for m in GATED} | {f"running:{e}": 0.0 for e in ENGINES}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "llmserve_admitted_requests" and s.labels.get("model") in GATED:
                out[f"admitted:{s.labels['model']}"] += s.value
            elif s.name == "vllm:num_requests_running" and s.labels.get("model_name") in ENGINES:
                out[f"running:{s.labels['model_name']}"] += s.value
    return out


def _settled(url: str, within_s: float) -> dict[str, float]:
    deadline = time.monotonic() + within_s
    while True:
        gauges = _gauges(url)
        if not any(gauges.values()) or time.monotonic() > deadline:
            return gauges
        time.sleep(0.5)


def _wait_admitted(url: str, count: int, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while _gauges(url)["admitted:tiny"] < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gauges(url)["admitted:tiny"] == count


def _chat(url: str, model: str) -> int:
    body = {"model": model, "messages": QUESTION, "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code


def _serves_again(url: str, model: str, within_s: float = 20) -> int:
    """The status of a normal request, retried while the model is still busy aborting
    what the vanished clients left (``tiny-remote`` times out after 1.5 s)."""
    deadline = time.monotonic() + within_s
    while (status := _chat(url, model)) != 200 and time.monotonic() < deadline:
        time.sleep(1)
    return status


def test_clients_that_stop_reading_lose_their_slots_and_their_engine_work(load_app):
    url = load_app.url
    request = _request(
        url, "/v1/chat/completions", {"model": "tiny", "messages": QUESTION} | HEAVY_STREAM
    )
    running, queued = LIMITS["max_ongoing_requests"], LIMITS["max_queued_requests"]
    readers = [_connect(url, rcvbuf=4096) for _ in range(running)]
    waiting = [_connect(url) for _ in range(queued)]
    try:
        for sock in readers:
            sock.sendall(request)  # ... and never read a byte
        _wait_admitted(url, running)
        for sock in waiting:
            sock.sendall(request)
        _wait_admitted(url, CAPACITY)  # every slot and queue place taken
        assert _chat(url, "tiny") == 429
        for sock in waiting:  # these leave (freed at once); the readers stay, stalled
            _reset(sock)
        started = time.monotonic()
        gauges = _settled(url, within_s=150)
        freed_after = time.monotonic() - started
        print(f"\n{running} non-reading streams freed after {freed_after:.1f} s: {gauges}")
        assert not any(gauges.values()), gauges
        assert _chat(url, "tiny") == 200
    finally:
        for sock in readers:
            sock.close()
    # Cut by the send timeout, not by finishing: 1,900 tokens each would take far longer.
    assert freed_after > SEND_TIMEOUT_S


ROUTES = [
    ("/v1/chat/completions", {"model": "tiny", "messages": QUESTION} | HEAVY_STREAM),
    ("/v1/chat/completions", {"model": "tiny-remote", "messages": QUESTION} | HEAVY_STREAM),
    ("/v1/chat/completions", {"model": "rag", "messages": QUESTION, "stream": True}),
    ("/v1/retrieve", {"pipeline": "rag", "query": "capital of France"}),
    ("/v1/embeddings", {"model": "minilm", "input": ["a sentence to embed"] * 64}),
    (
        "/v1/rerank",
        {"model": "minilm-rerank", "query": "capital", "documents": ["Paris is a city."] * 64},
    ),
]


def _vanish(url: str, path: str, body: dict, rng: random.Random) -> str:
    """Send the request and reset the connection at a random point; where it was reset."""
    request = _request(url, path, body)
    sock = _connect(url)
    point = rng.choice(["mid-request", "queued", "before-first-byte", "mid-answer"])
    try:
        if point == "mid-request":
            sock.sendall(request[: rng.randrange(1, len(request))])
            time.sleep(rng.uniform(0, 0.2))
        elif point in ("queued", "before-first-byte"):
            sock.sendall(request)
            time.sleep(rng.uniform(0, 0.05) if point == "queued" else rng.uniform(0.05, 0.5))
        else:
            sock.sendall(request)
            sock.settimeout(60)
            sock.recv(rng.randrange(1, 4096))  # the status line, or a few chunks in
    except OSError:
        pass  # refused or reset by the server first: fine, it is gone either way
    finally:
        _reset(sock)
    return point


@pytest.mark.parametrize(
    ("path", "body"), ROUTES, ids=[f"{p} {b.get('model', b.get('pipeline'))}" for p, b in ROUTES]
)
def test_clients_that_vanish_at_random_points_leave_nothing_behind(load_app, path, body):
    url = load_app.url
    rng = random.Random(f"{path}{body}")
    per_route = 3 * LIMITS["max_ongoing_requests"]
    points: list[str] = []
    threads = [
        threading.Thread(target=lambda: points.append(_vanish(url, path, body, rng)))
        for _ in range(per_route)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    gauges = _settled(url, within_s=15)
    print(f"\n{path} {sorted(points)}: {gauges}")
    assert not any(gauges.values()), gauges
    for model in ("tiny", "tiny-remote", "rag"):
        assert _serves_again(url, model) == 200
    if "messages" not in body:  # the route itself serves again, too
        again = httpx.post(f"{url}{path}", json=body, timeout=60)
        assert again.status_code == 200, again.text
