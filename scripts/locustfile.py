"""Locust load test of llmserve's OpenAI API: streaming chat and RAG questions.

Two user classes:

- ``StreamingChatUser`` sends ``POST /v1/chat/completions`` with ``stream:
  true`` and reads the server-sent events to the end. ``POST chat (stream)`` is
  the whole stream, from request to ``data: [DONE]``; it fails on a non-200
  status, an ``error`` event, an unparsable event, or a stream that ends without
  content or without ``[DONE]``. ``TTFT chat (stream)`` is the time to the first
  content token (a custom event).
- ``RagUser`` asks a RAG pipeline a question (non-streaming); ``POST rag`` fails
  on a non-200 status or an answer without ``sources``.

An overloaded server answers 429 (with ``Retry-After``): Locust counts those as
failures named ``HTTP 429``, so the report shows how much was refused.

Environment:

- ``LLMSERVE_MODEL``: model id to request (default ``tiny``);
- ``LLMSERVE_RAG_PIPELINE``: pipeline id for ``RagUser`` (default ``rag-docs``);
- ``LLMSERVE_API_KEY``: bearer key, if the config sets ``ingress.api_keys``;
- ``LLMSERVE_MAX_TOKENS``: tokens per answer (default 64).

Run against a running ``llmserve run`` (``make load`` does this with a report)::

    LLMSERVE_MODEL=tiny .venv/bin/locust -f scripts/locustfile.py --headless \\
        -u 4 -r 4 -t 20s --host http://127.0.0.1:8000 StreamingChatUser
"""

from __future__ import annotations

import json
import os
import time

from locust import HttpUser, between, task

MODEL = os.environ.get("LLMSERVE_MODEL", "tiny")
PIPELINE = os.environ.get("LLMSERVE_RAG_PIPELINE", "rag-docs")
API_KEY = os.environ.get("LLMSERVE_API_KEY")
MAX_TOKENS = int(os.environ.get("LLMSERVE_MAX_TOKENS", "64"))
NAME = "chat (stream)"
PROMPTS = [
    "Explain what a load balancer does in two sentences.",
    "Write a haiku about autumn.",
    "List three uses of a hash map.",
    "What is the capital of France, and why is it famous?",
]


QUESTIONS = [
    "How do I check a config file?",
    "What does the ingress do?",
    "How are RAG sources returned?",
    "What happens when the server is overloaded?",
]


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if API_KEY:
        headers["Authorization"] = f"Bearer {API_KEY}"
    return headers


class RagUser(HttpUser):
    """One RAG client: a question to a pipeline, the answer with its sources."""

    wait_time = between(0.1, 0.5)
    weight = 1

    def on_start(self) -> None:
        self.headers = _headers()
        self.turn = 0

    @task
    def ask(self) -> None:
        self.turn += 1
        body = {
            "model": PIPELINE,
            "messages": [{"role": "user", "content": QUESTIONS[self.turn % len(QUESTIONS)]}],
            "max_tokens": MAX_TOKENS,
        }
        with self.client.post(
            "/v1/chat/completions", json=body, headers=self.headers, catch_response=True, name="rag"
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif not response.json().get("sources"):
                response.failure("answer without sources")
            else:
                response.success()


class StreamingChatUser(HttpUser):
    """One chat client: a streaming request, a short think time, repeat."""

    wait_time = between(0.1, 0.5)
    weight = 3

    def on_start(self) -> None:
        self.headers = _headers()
        self.turn = 0

    @task
    def stream_chat(self) -> None:
        self.turn += 1
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPTS[self.turn % len(PROMPTS)]}],
            "max_tokens": MAX_TOKENS,
            "stream": True,
        }
        start = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers=self.headers,
            stream=True,
            catch_response=True,
            name=NAME,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                ttft, chunks, done = read_stream(response, start)
            except ValueError as exc:
                response.failure(str(exc))
                return
            # Locust timed the response headers only; report the whole stream.
            response.request_meta["response_time"] = (time.perf_counter() - start) * 1000
            response.request_meta["response_length"] = chunks
            if ttft is None or not done:
                response.failure(f"stream ended early (content={ttft is not None}, done={done})")
                return
            response.success()
        self.environment.events.request.fire(
            request_type="TTFT",
            name=NAME,
            response_time=ttft * 1000,
            response_length=0,
            exception=None,
            context={},
        )


def read_stream(response, start: float) -> tuple[float | None, int, bool]:
    """Consume an OpenAI SSE stream.

    Returns (seconds to the first content token or None, content chunks, saw
    ``[DONE]``); raises ValueError on an ``error`` event or a malformed one.
    """
    ttft, chunks = None, 0
    for line in response.iter_lines():
        if not line.startswith(b"data:"):
            continue  # blank separators and ": ping" comments
        data = line[len(b"data:") :].strip()
        if data == b"[DONE]":
            return ttft, chunks, True
        try:
            event = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"bad SSE event: {data[:100]!r}") from exc
        if "error" in event:
            raise ValueError(f"error event: {json.dumps(event['error'])[:200]}")
        choices = event.get("choices") or [{}]
        if choices[0].get("delta", {}).get("content"):
            chunks += 1
            if ttft is None:
                ttft = time.perf_counter() - start
    return ttft, chunks, False
