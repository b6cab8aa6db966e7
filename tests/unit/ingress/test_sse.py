"""EventStream: sse-starlette's response, sending each chunk without a cancel scope."""

from __future__ import annotations

import anyio
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from llmserve.ingress.sse import EventStream

pytestmark = pytest.mark.unit

CHUNKS = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]


def _stream(**options):
    async def endpoint(_request):
        async def chunks():
            for chunk in CHUNKS:
                yield chunk

        return EventStream(chunks(), ping=15, **options)

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


def test_chunks_go_out_byte_for_byte_without_a_scope_per_send(scopes: list) -> None:
    """If sse-starlette stops routing sends through ``_send_with_timeout``, this fails."""
    assert _stream() == b"".join(CHUNKS)
    assert scopes == []


def test_with_a_send_timeout_each_send_keeps_its_scope(scopes: list) -> None:
    assert _stream(send_timeout=30) == b"".join(CHUNKS)
    assert len(scopes) >= len(CHUNKS)
