"""Canaries for llmserve/compat/sse_starlette.py: EventStream, sse-starlette's response
sending each chunk without a cancel scope.

They fail when sse-starlette stops sending through ``_send_with_timeout`` (the
override would be skipped, or a scope opened elsewhere) or stops keeping its
``_send_interrupted`` mark, which the override keeps too.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from llmserve.compat.sse_starlette import EventStream

pytestmark = pytest.mark.unit

CHUNKS = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]


def _stream(response_cls: type[EventSourceResponse] = EventStream, **options) -> bytes:
    async def endpoint(_request):
        async def chunks():
            for chunk in CHUNKS:
                yield chunk

        return response_cls(chunks(), ping=15, **options)

    app = Starlette(routes=[Route("/", endpoint)])
    with TestClient(app) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return response.content


@pytest.fixture
def scopes(monkeypatch) -> list:
    """The timeouts of the cancel scopes sse-starlette opens."""
    opened = []
    real = anyio.move_on_after

    def move_on_after(delay, *args, **kwargs):
        opened.append(delay)
        return real(delay, *args, **kwargs)

    monkeypatch.setattr("sse_starlette.sse.anyio.move_on_after", move_on_after)
    return opened


@pytest.fixture
def overridden_sends(monkeypatch) -> list:
    """The messages that went through EventStream's override."""
    sent = []
    real = EventStream._send_with_timeout

    async def counting(self, send, message):
        sent.append(message)
        await real(self, send, message)

    monkeypatch.setattr(EventStream, "_send_with_timeout", counting)
    return sent


def test_chunks_go_out_byte_for_byte_without_a_scope_per_send(scopes, overridden_sends) -> None:
    assert _stream() == b"".join(CHUNKS)
    assert scopes == []
    bodies = [m.get("body") for m in overridden_sends if m["type"] == "http.response.body"]
    assert bodies[: len(CHUNKS)] == CHUNKS


def test_the_scope_check_can_fail(scopes) -> None:
    """sse-starlette's own response opens a scope per send: the check above sees it."""
    assert _stream(EventSourceResponse) == b"".join(CHUNKS)
    assert len(scopes) >= len(CHUNKS)


def test_with_a_send_timeout_each_send_keeps_its_scope(scopes) -> None:
    assert _stream(send_timeout=30) == b"".join(CHUNKS)
    assert len(scopes) >= len(CHUNKS)


@pytest.mark.parametrize(
    ("response_cls", "send_timeout"), [(EventSourceResponse, 30), (EventStream, None)]
)
def test_a_send_that_fails_is_marked_interrupted(response_cls, send_timeout) -> None:
    """sse-starlette skips the closing send after an interrupted one; so does EventStream."""

    async def chunks():
        yield b"data: one\n\n"

    async def broken(message) -> None:
        raise OSError("peer gone")

    response = response_cls(chunks(), send_timeout=send_timeout)
    assert response._send_interrupted is False
    with pytest.raises(OSError):
        asyncio.run(response._send_with_timeout(broken, {"type": "http.response.body"}))
    assert response._send_interrupted is True


# --- the stall watchdog and the close hook ------------------------------------------


SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


class _Endless:
    """A body iterator that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def events(self):
        try:
            while True:
                await asyncio.sleep(0)
                yield b"data: " + b"x" * 1000 + b"\n\n"
        finally:
            self.closed = True


async def _never_disconnects() -> dict:
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


def test_a_client_that_stops_reading_is_cut_after_the_stall_timeout() -> None:
    body, closes, sent = _Endless(), [], []

    async def send(message) -> None:
        sent.append(message)
        if len(sent) > 3:  # the client's buffers are full: this send never completes
            await asyncio.sleep(3600)

    async def run() -> EventStream:
        response = EventStream(
            body.events(), stall_timeout_s=0.2, on_close=lambda: closes.append(1)
        )
        await asyncio.wait_for(response(SCOPE, _never_disconnects, send), 5)
        return response

    response = asyncio.run(run())
    assert response.stalled
    assert body.closed  # the generator (and with it the engine request) was closed
    assert closes == [1]
    assert not any(m.get("more_body") is False for m in sent)  # no clean end: dropped


def test_a_slow_reader_that_keeps_reading_is_not_cut() -> None:
    sent = []

    async def chunks():
        for chunk in CHUNKS:
            yield chunk

    async def send(message) -> None:
        sent.append(message)
        await asyncio.sleep(0.05)  # slow, but every send completes

    async def run() -> EventStream:
        response = EventStream(chunks(), stall_timeout_s=0.2)
        await asyncio.wait_for(response(SCOPE, _never_disconnects, send), 5)
        return response

    response = asyncio.run(run())
    assert not response.stalled
    assert b"".join(m.get("body", b"") for m in sent) == b"".join(CHUNKS)


def test_the_close_hook_runs_when_the_client_is_gone_before_the_first_byte() -> None:
    """The body iterator never starts, so its own cleanup never runs: the hook must."""
    body, closes = _Endless(), []

    async def send(message) -> None:
        raise OSError("connection reset by peer")

    async def run() -> None:
        response = EventStream(body.events(), on_close=lambda: closes.append(1))
        with pytest.raises(OSError):
            await response(SCOPE, _never_disconnects, send)

    asyncio.run(run())
    assert closes == [1]
