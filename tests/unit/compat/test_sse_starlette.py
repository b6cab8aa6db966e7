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
