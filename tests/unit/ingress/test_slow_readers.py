"""Streams never hold an admission slot for a client that is gone or stopped reading.

The app is the real ingress app with one in-process model behind a one-slot gate,
driven over raw ASGI so that the client's side can stall or vanish at any point.
"""

from __future__ import annotations

import asyncio
import gc
import json

import pytest
from prometheus_client import REGISTRY

from llmserve.config import IngressConfig
from llmserve.ingress import call as ingress_call
from llmserve.ingress.app import build_ingress_app
from llmserve.ingress.routes import Route, RouteTable
from llmserve.servers.clients import LocalClient
from llmserve.servers.protocol import NO_META, Endpoint
from tests.unit.ingress.asgi import http_scope

pytestmark = pytest.mark.unit

MODEL = "slow-reader-model"  # its own gauge labels, apart from other tests'


class Streamer:
    """A model that streams big events until it is closed; records its streams' ends."""

    def __init__(self) -> None:
        self.closed = 0

    def respond(self, endpoint, body, meta=NO_META):
        return self._events()

    async def _events(self):
        try:
            while True:
                await asyncio.sleep(0)
                yield "data: " + json.dumps({"x": "y" * 2000}) + "\n\n"
        finally:
            self.closed += 1


def _app(model: Streamer, send_timeout_s: float = 0.3):
    routes = RouteTable()
    routes.add(Route(MODEL, frozenset({Endpoint.CHAT}), {"id": MODEL}, limits=(1, 0)))
    config = IngressConfig(send_timeout_s=send_timeout_s)
    return build_ingress_app(config, [], routes, {MODEL: LocalClient(model)})


def _running() -> float:
    labels = {"model": MODEL, "state": "running"}
    return REGISTRY.get_sample_value("llmserve_admitted_requests", labels) or 0.0


def _receive():
    body = json.dumps({"model": MODEL, "messages": [], "stream": True}).encode()
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never disconnects cleanly
        return {"type": "http.disconnect"}

    return receive


def _scope() -> dict:
    return http_scope("/v1/chat/completions", [(b"content-type", b"application/json")])


async def _request(app, send) -> None:
    await asyncio.wait_for(app(_scope(), _receive(), send), 10)


def test_a_client_that_stops_reading_loses_its_slot_and_its_engine_work() -> None:
    model = Streamer()
    app = _app(model)
    messages = []

    async def stalled(message) -> None:
        messages.append(message)
        if len(messages) > 5:  # every buffer on the way is full now
            await asyncio.sleep(3600)

    async def ok(message) -> None:
        messages.append(message)
        if len(messages) > 20:  # a reader that leaves after a while
            raise OSError("gone")

    async def run() -> None:
        await _request(app, stalled)  # returns: cut after send_timeout_s
        assert _running() == 0 and model.closed == 1
        messages.clear()
        with pytest.raises(OSError):
            await _request(app, ok)  # the one slot is free again
        assert messages[0]["status"] == 200

    asyncio.run(run())
    assert _running() == 0 and model.closed == 2


def test_a_client_gone_before_the_first_byte_frees_the_slot() -> None:
    model = Streamer()
    app = _app(model)

    async def gone(message) -> None:
        raise OSError("connection reset by peer")

    async def run() -> None:
        for _ in range(3):  # a leak would leave the one slot taken: 429 from the 2nd on
            with pytest.raises(OSError):
                await _request(app, gone)
            assert _running() == 0

    asyncio.run(run())
    assert model.closed == 3


def test_a_stream_response_dropped_unsent_frees_the_slot() -> None:
    """The request task cancelled between the first item and the first byte."""
    from llmserve.ingress.admission import AdmissionGate

    model = Streamer()
    route = Route(MODEL, frozenset({Endpoint.CHAT}), {"id": MODEL})
    gate = AdmissionGate(MODEL, 1, 0)
    target = ingress_call.Target(route, LocalClient(model), 60, gate, {})

    async def run() -> None:
        body = {"model": MODEL, "stream": True}
        response = await ingress_call.call(target, Endpoint.CHAT, body, NO_META)
        assert _running() == 1
        del response
        gc.collect()
        assert _running() == 0
        for _ in range(3):
            await asyncio.sleep(0)  # the model's stream closes on the loop

    asyncio.run(run())
    assert model.closed == 1


def test_a_client_gone_mid_request_is_no_error() -> None:
    """Reset while sending its body: no 500, no traceback, the model never asked."""
    model = Streamer()
    app = _app(model)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(app(_scope(), receive, send), 10))
    assert sent[0]["status"] == 499
    assert model.closed == 0 and _running() == 0
