"""The ingress's ASGI guard before any route code: the Host allow-list (DNS rebinding)
and JSON-only POST bodies (a browser's cross-site form post), in OpenAI's error shape.

The app is the real ingress app (``build_ingress_app``) with one in-process model
that records what reaches it; auth, the body limit and the drain are in
test_ingress_app.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from llmserve.config import IngressConfig
from llmserve.ingress.app import build_ingress_app
from llmserve.ingress.routes import Route, RouteTable
from llmserve.servers.clients import LocalClient
from llmserve.servers.protocol import NO_META, Endpoint
from tests.unit.ingress.asgi import http_scope

pytestmark = pytest.mark.unit

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}"}
LOCAL = "http://127.0.0.1:8000"
CHAT = "/v1/chat/completions"


class Recorder:
    """A model that answers every request with a small JSON object and records it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def respond(self, endpoint: Endpoint, body: dict[str, Any], meta=NO_META):
        return self._answer(endpoint, body)

    async def _answer(self, endpoint: Endpoint, body: dict[str, Any]):
        self.calls.append(body)
        if endpoint is Endpoint.CHAT:
            # Shaped like a chat completion, so the openai SDK can parse it.
            yield {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": body.get("model", "m"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
            }
        else:
            yield {"object": "answer"}


@pytest.fixture
def model() -> Recorder:
    return Recorder()


def _app(model: Recorder, keys: list[str] | None = None, **config: Any):
    routes = RouteTable()
    endpoints = frozenset({Endpoint.CHAT, Endpoint.RETRIEVE})
    routes.add(Route("m", endpoints, {"id": "m", "root": "builtin:tiny-llama", "kind": "model"}))
    return build_ingress_app(
        IngressConfig.model_validate(config), [KEY] if keys is None else keys, routes,
        {"m": LocalClient(model)},
    )  # fmt: skip


def _client(app, base_url: str = LOCAL) -> Iterator[TestClient]:
    with TestClient(app, base_url=base_url) as client:
        yield client


@pytest.fixture
def local(model: Recorder) -> Iterator[TestClient]:
    """An ingress on the default address (127.0.0.1), called as http://127.0.0.1:8000."""
    yield from _client(_app(model))


def _assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["code"], err["type"], err["param"]) == (status, "invalid_request_error", None)
    return err


def _chat(client: TestClient, **kw: Any) -> httpx.Response:
    return client.post(CHAT, json={"model": "m"}, headers={**AUTH, **kw.pop("headers", {})}, **kw)


# --- Host --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "127.0.0.1", "localhost:1234", "LocalHost", "[::1]:8000", "[::1]"]
)
def test_a_loopback_ingress_answers_its_loopback_names_on_any_port(
    local: TestClient, model: Recorder, host: str
) -> None:
    assert _chat(local, headers={"Host": host}).status_code == 200
    assert local.get("/v1/models", headers={**AUTH, "Host": host}).status_code == 200
    assert len(model.calls) == 1


REBOUND = ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "localhost.evil", ""]


@pytest.mark.parametrize("host", REBOUND)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", CHAT), ("POST", "/v1/retrieve"), ("GET", "/v1/models"), ("GET", "/metrics")],
)
def test_a_loopback_ingress_refuses_other_hosts_with_421(
    local: TestClient, model: Recorder, host: str, method: str, path: str
) -> None:
    """What a web page reaches by DNS rebinding: its own name, resolved to 127.0.0.1."""
    body = {"model": "m", "pipeline": "m"}
    response = local.request(method, path, json=body, headers={**AUTH, "Host": host})
    err = _assert_error(response, 421)
    assert "ingress.allowed_hosts" in err["message"]
    assert model.calls == []


def test_the_host_is_checked_before_the_key(local: TestClient) -> None:
    _assert_error(local.post(CHAT, json={"model": "m"}, headers={"Host": "attacker.example"}), 421)
    assert local.post(CHAT, json={"model": "m"}).status_code == 401


def test_health_answers_any_host(local: TestClient) -> None:
    """A Kubernetes probe sends the pod's IP as Host; /health reveals nothing a key guards."""
    for host in ("10.1.2.3:8000", "attacker.example"):
        response = local.get("/health", headers={"Host": host})
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


def test_an_ingress_on_all_interfaces_answers_any_host_by_default(model: Recorder) -> None:
    app = _app(model, host="0.0.0.0", api_keys=[{"env": "UNUSED"}])
    for client in _client(app, "http://llmserve.ns.svc.cluster.local:8000"):
        assert _chat(client).status_code == 200
        assert _chat(client, headers={"Host": "10.1.2.3"}).status_code == 200


def test_configured_hosts_replace_the_default(model: Recorder) -> None:
    app = _app(model, allowed_hosts=["api.example.com", "*.corp.example", "10.0.0.5"])
    for client in _client(app):
        for host in (
            "api.example.com",
            "API.example.com:443",
            "a.corp.example",
            "b.a.corp.example",
        ):
            assert _chat(client, headers={"Host": host}).status_code == 200, host
        assert _chat(client, headers={"Host": "10.0.0.5:8000"}).status_code == 200
        for host in ("corp.example", "127.0.0.1:8000", "localhost", "api.example.com.evil"):
            _assert_error(_chat(client, headers={"Host": host}), 421)
    assert len(model.calls) == 5


def test_a_star_answers_any_host(model: Recorder) -> None:
    for client in _client(_app(model, allowed_hosts=["*"]), "http://anything.example"):
        assert _chat(client).status_code == 200


def _scope(headers: list[tuple[bytes, bytes]], method: str = "POST", path: str = CHAT) -> dict:
    return http_scope(path, headers, method)


def _run(app, scope: dict, body: bytes = b"") -> tuple[int, bytes]:
    """One request over raw ASGI (TestClient always sends a Host header)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_a_request_without_a_host_header_is_answered(model: Recorder) -> None:
    """Only HTTP/1.0 clients (HAProxy's default health check) omit Host; a browser never does."""
    headers = [(b"authorization", AUTH["Authorization"].encode())]
    json_ = [(b"content-type", b"application/json")]
    status, _ = _run(_app(model), _scope(headers + json_), b'{"model": "m"}')
    assert status == 200
    assert model.calls == [{"model": "m"}]


# --- Content-Type ------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON ; charset=UTF-8"],
)
def test_json_bodies_are_accepted(local: TestClient, model: Recorder, content_type: str) -> None:
    response = local.post(
        CHAT, content=b'{"model": "m"}', headers={**AUTH, "Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    assert model.calls == [{"model": "m"}]


NOT_JSON = {
    "a form post (curl -d)": "application/x-www-form-urlencoded",
    "a text/plain post": "text/plain",
    "a text/plain post with a charset": "text/plain;charset=UTF-8",
    "multipart": "multipart/form-data; boundary=x",
    "json-like": "application/json-seq",
    "text/json": "text/json",
}


@pytest.mark.parametrize("content_type", NOT_JSON.values(), ids=NOT_JSON.keys())
@pytest.mark.parametrize("path", [CHAT, "/v1/retrieve"])
def test_a_post_that_is_not_json_is_415(
    local: TestClient, model: Recorder, content_type: str, path: str
) -> None:
    """A web page can send these cross-site without a CORS preflight."""
    body = b'{"model": "m", "pipeline": "m"}'
    response = local.post(path, content=body, headers={**AUTH, "Content-Type": content_type})
    err = _assert_error(response, 415)
    assert err["message"] == "request body must be JSON sent as Content-Type: application/json"
    assert model.calls == []


def test_a_post_without_a_content_type_is_415(model: Recorder) -> None:
    """A page can post a Blob with no type, which sends no Content-Type and no preflight."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", AUTH["Authorization"].encode())]
    status, body = _run(_app(model), _scope(headers), b'{"model": "m"}')
    assert status == 415
    assert json.loads(body)["error"]["code"] == 415
    assert model.calls == []


def test_the_key_is_checked_before_the_content_type(local: TestClient) -> None:
    response = local.post(CHAT, content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_requests_without_a_body_need_no_content_type(local: TestClient) -> None:
    assert local.get("/v1/models", headers=AUTH).status_code == 200
    assert local.get("/metrics", headers=AUTH).status_code == 200
    assert local.get("/health").status_code == 200


# --- real clients pass ---------------------------------------------------------------


def test_the_openai_sdk_passes_the_guard(model: Recorder) -> None:
    """The SDK (and LangChain's and LlamaIndex's OpenAI clients, built on it) sends JSON
    with its Content-Type, to a Host the default allow-list answers."""
    for http in _client(_app(model)):
        sdk = openai.OpenAI(base_url=f"{LOCAL}/v1", api_key=KEY, http_client=http, max_retries=0)
        answer = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert answer.choices[0].message.content == "hi"
        assert [m.id for m in sdk.models.list().data] == ["m"]
    assert [call["model"] for call in model.calls] == ["m"]


def test_langchain_passes_the_guard(model: Recorder) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    for http in _client(_app(model)):
        chat = langchain_openai.ChatOpenAI(
            base_url=f"{LOCAL}/v1", api_key=KEY, model="m", http_client=http, max_retries=0
        )
        assert chat.invoke("x").content == "hi"
    assert len(model.calls) == 1
