"""The ingress's own HTTP logic: auth, body limit, routing on ``model``, JSON vs SSE relay.

The app is the real FastAPI app from ``build_ingress_app``; each model behind it is a
small ``StreamingServer`` in this file, reached through ``LocalClient`` (the same
client the fused model uses). The real engines behind real handles are covered by the
e2e tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai.types import Model
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError
from vllm.entrypoints.serve.engine.protocol import ErrorInfo, ErrorResponse

from llmserve.config import IngressConfig
from llmserve.ingress import call as ingress_call
from llmserve.ingress.app import build_ingress_app
from llmserve.ingress.routes import Route, RouteTable
from llmserve.observability import metrics
from llmserve.openai.errors import APIError
from llmserve.servers.clients import LocalClient
from llmserve.servers.protocol import GENERATION_ENDPOINTS, NO_META, Endpoint
from tests.unit.ingress.asgi import http_scope

pytestmark = pytest.mark.unit

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT = 100
SECRET = "secret-internal-detail"

ENDPOINTS = {
    "/v1/chat/completions": "model",
    "/v1/completions": "model",
    "/v1/responses": "model",
    "/tokenize": "model",
    "/detokenize": "model",
    "/v1/embeddings": "model",
    "/v1/rerank": "model",
    "/v1/retrieve": "pipeline",
}


class Model_:
    """A model behind the protocol, shaped like LLMServer: ``serve`` is an async
    generator yielding one dict (a JSON answer) or SSE ``str`` events.

    The request's ``do`` picks what it does (bodies stay under the 100-byte limit):
    ``echo``, ``error:<code>``, ``raise:<exc>``, ``stream``, ``stream:<exc>``, ``empty``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ended: list[str] = []

    async def _answer(self, method: str, body: dict[str, Any]):
        self.calls.append((method, body))
        kind, _, arg = body.get("do", "echo").partition(":")
        if kind == "echo":
            yield {"object": "answer", "method": method, "echo": body}
        elif kind == "error":
            yield _error_answer(arg)
        elif kind == "raise":
            raise _exception(arg)
        elif kind == "stream":
            events = EVENTS[:3] if arg else EVENTS
            for event in events:
                await asyncio.sleep(0)
                yield event
            if arg:
                raise _exception(arg)
        elif kind == "empty":
            return
        elif kind == "flaky":  # the first call fails before any byte, the next ones answer
            if len(self.calls) == 1:
                raise _exception(arg) if arg != "503" else APIError(503, "engine dead")
            yield {"object": "answer", "method": method, "echo": body}
        elif kind == "hang":  # a first answer that never comes, or a stream that stalls
            self.ended.append("started")
            try:
                if arg == "stream":
                    yield EVENTS[0]
                await asyncio.sleep(3600)
            finally:
                self.ended.append("closed")

    def respond(self, endpoint: Endpoint, body: dict[str, Any], meta=NO_META):
        return self._answer(str(endpoint), body)


def _error_answer(code: str) -> dict[str, Any]:
    if code == "junk":
        return {"error": {"message": "odd", "code": "teapot"}}
    return ErrorResponse(
        error=ErrorInfo(message="bad things", type="BadRequestError", param="n", code=int(code))
    ).model_dump()


def _exception(kind: str) -> BaseException:
    return {
        "runtime": RuntimeError(f"{SECRET}: division by zero in /srv/app.py"),
        "api400": APIError(400, "prompt is longer than the context", param="messages"),
        "backpressure": BackPressureError(num_queued_requests=9, max_queued_requests=8),
        "actor_died": ActorDiedError(),
    }[kind]


EVENTS = [
    'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Grüße"}}]}\n\n',
    'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" 🌍\\n"}}]}\n\n',
    'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    "data: [DONE]\n\n",
]


class MetricsSource:
    """What the ingress needs from a deployment handle for /metrics: its
    ``deployment_name`` and ``broadcast("metrics_text")``, with one call per replica.

    Each replica answers its text, or ``FAIL`` (the actor died) or ``HANG`` (never answers).
    ``per_replica=False`` leaves out the per-replica results, so the ingress has only
    ``results_async`` (the public, whole-broadcast way).
    """

    def __init__(self, name: str, replicas: dict[str, Any], per_replica: bool = True) -> None:
        self.deployment_name = name
        self.replicas = replicas
        self.per_replica = per_replica
        self.broadcasts: list[str] = []

    def broadcast(self, method: str):
        self.broadcasts.append(method)
        calls = [_ReplicaCall(id_, answer) for id_, answer in self.replicas.items()]
        return _Broadcast(calls) if self.per_replica else _WholeBroadcast(calls)


FAIL, HANG = "fail", "hang"


class _ReplicaCall:
    def __init__(self, replica: str, answer: Any) -> None:
        self.replica, self.answer = replica, answer

    async def get_async(self) -> metrics.ReplicaMetrics:
        if self.answer == FAIL:
            raise ActorDiedError()
        if self.answer == HANG:
            await asyncio.sleep(3600)
        return metrics.ReplicaMetrics(self.replica, self.answer)


class _Broadcast:
    def __init__(self, calls: list[_ReplicaCall]) -> None:
        self.calls = calls

    async def _fetch_replica_results_async(self) -> list[_ReplicaCall]:
        return self.calls


class _WholeBroadcast:
    def __init__(self, calls: list[_ReplicaCall]) -> None:
        self.calls = calls

    async def results_async(self, return_exceptions: bool = False) -> list[Any]:
        return await asyncio.gather(*(c.get_async() for c in self.calls), return_exceptions=True)


CARDS = [
    {"id": "m", "root": "builtin:tiny-llama", "kind": "model"},
    {"id": "rag", "kind": "pipeline"},
]


@pytest.fixture
def model() -> Model_:
    return Model_()


CHAT = frozenset({Endpoint.CHAT})
M_ENDPOINTS = GENERATION_ENDPOINTS | {Endpoint.EMBEDDINGS, Endpoint.RERANK}
RAG_ENDPOINTS = frozenset({Endpoint.CHAT, Endpoint.RESPONSES, Endpoint.RETRIEVE})

Table = tuple[RouteTable, dict[str, Any]]


def _table(server: Any = None, served: dict[str, frozenset[Endpoint]] | None = None, **kw) -> Table:
    """Routes for ``served`` ids (default: ``m`` on chat), all answered by ``server``.

    ``kw`` are ``Route`` fields for every route; ``metrics_sources`` goes to the table.
    """
    routes = RouteTable(metrics_sources=list(kw.pop("metrics_sources", [])))
    cards = {card["id"]: card for card in CARDS}
    for id_, endpoints in ({"m": CHAT} if served is None else served).items():
        routes.add(Route(id_, endpoints, cards.get(id_, {"id": id_}), **kw))
    return routes, {id_: LocalClient(server) for id_ in routes.routes}


def _client(
    table: Table,
    api_keys: list[str] | None = None,
    health=None,
    timeout_s: float = 300,
    metrics_timeout_s: float = 2.0,
) -> Iterator[TestClient]:
    config = IngressConfig(
        max_request_body_bytes=LIMIT, request_timeout_s=timeout_s, retry_after_s=1
    )
    keys = [KEY] if api_keys is None else api_keys
    routes, clients = table
    app = build_ingress_app(
        config, keys, routes, clients, health, metrics_timeout_s=metrics_timeout_s
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(model: Model_) -> Iterator[TestClient]:
    yield from _client(_table(model, {"m": M_ENDPOINTS, "rag": RAG_ENDPOINTS}))


def _post(client: TestClient, body: Any, path: str = "/v1/chat/completions", **kw):
    return client.post(path, json=body, headers=AUTH, **kw)


def _assert_error(
    response, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    err = response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == (code or status)
    assert err["param"] == param
    return err


# --- API keys ---------------------------------------------------------------

ALL_ROUTES = [("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/nope")] + [
    ("POST", path) for path in ENDPOINTS
]
BAD_AUTH = {
    "missing": {},
    "wrong key": {"Authorization": "Bearer nope"},
    "key with a suffix": {"Authorization": f"Bearer {KEY}x"},
    "empty bearer": {"Authorization": "Bearer "},
    "basic scheme": {"Authorization": f"Basic {KEY}"},
    "no scheme": {"Authorization": KEY},
    "other header": {"X-API-Key": KEY},
}


@pytest.mark.parametrize("headers", BAD_AUTH.values(), ids=BAD_AUTH.keys())
@pytest.mark.parametrize(("method", "path"), ALL_ROUTES, ids=[f"{m} {p}" for m, p in ALL_ROUTES])
def test_every_route_but_health_needs_a_valid_key(
    client: TestClient, model: Model_, method: str, path: str, headers: dict[str, str]
) -> None:
    response = client.request(method, path, headers=headers, json={"model": "m"})
    err = _assert_error(response, 401)
    assert err["type"] == "authentication_error"
    assert model.calls == []  # the model never sees an unauthenticated request


def test_health_needs_no_key(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("header", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER  {KEY} "])
def test_a_valid_key_is_accepted(client: TestClient, header: str) -> None:
    response = client.post(
        "/v1/chat/completions", json={"model": "m"}, headers={"Authorization": header}
    )
    assert response.status_code == 200, response.text


def test_any_of_several_keys_is_accepted(model: Model_) -> None:
    for client in _client(_table(model), api_keys=["first", "second"]):
        for key in ("first", "second"):
            headers = {"Authorization": f"Bearer {key}"}
            response = client.post("/v1/chat/completions", json={"model": "m"}, headers=headers)
            assert response.status_code == 200
        response = client.post(
            "/v1/chat/completions", json={"model": "m"}, headers={"Authorization": "Bearer third"}
        )
        assert response.status_code == 401


def test_no_keys_configured_means_no_auth(model: Model_) -> None:
    for client in _client(_table(model), api_keys=[]):
        response = client.post("/v1/chat/completions", json={"model": "m"})
        assert response.status_code == 200
        assert response.json()["echo"] == {"model": "m"}


# --- body size limit --------------------------------------------------------


def _body_of_size(size: int) -> bytes:
    base = {"model": "m", "pad": ""}
    raw = json.dumps(base).encode()
    base["pad"] = "x" * (size - len(raw))
    raw = json.dumps(base).encode()
    assert len(raw) == size
    return raw


def test_a_body_at_the_limit_is_accepted(client: TestClient, model: Model_) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=_body_of_size(LIMIT),
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert len(model.calls) == 1


def test_a_body_over_the_limit_is_413_by_content_length(client: TestClient, model: Model_) -> None:
    raw = _body_of_size(LIMIT + 1)
    response = client.post(
        "/v1/chat/completions",
        content=raw,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.request.headers["content-length"] == str(LIMIT + 1)
    err = _assert_error(response, 413)
    assert err["message"] == f"request body exceeds {LIMIT} bytes"
    assert err["type"] == "invalid_request_error"
    assert model.calls == []


def test_a_streamed_body_over_the_limit_is_413(client: TestClient, model: Model_) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "m", "pad": "'
        for _ in range(10):
            yield b"x" * 30
        yield b'"}'

    response = client.post("/v1/chat/completions", content=chunks(), headers=AUTH)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    _assert_error(response, 413)
    assert model.calls == []


def test_a_streamed_body_is_refused_before_it_is_all_read(model: Model_) -> None:
    """Over the limit, the ingress stops reading: it never buffers the whole body."""
    app = build_ingress_app(IngressConfig(max_request_body_bytes=LIMIT), [KEY], *_table(model))
    chunks = [b'{"model": "m", "pad": "'] + [b"x" * 40] * 50 + [b'"}']
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        more = read < len(chunks)
        return {"type": "http.request", "body": chunks[read - 1], "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope("/v1/chat/completions", [(b"authorization", AUTH["Authorization"].encode())])
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert json.loads(body)["error"]["code"] == 413
    assert read < 5  # ~100 bytes in, not all 2 kB
    assert model.calls == []


# --- request parsing and routing ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"", "request body is not valid JSON"),
        (b"\xff\xfe", "request body is not valid JSON"),
        (b'["model", "m"]', "request body must be a JSON object"),
        (b'"m"', "request body must be a JSON object"),
    ],
    ids=["syntax", "empty", "not-utf8", "array", "string"],
)
def test_a_body_that_is_not_a_json_object_is_400(
    client: TestClient, model: Model_, raw: bytes, message: str
) -> None:
    response = client.post("/v1/chat/completions", content=raw, headers=AUTH)
    err = _assert_error(response, 400)
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith(message)
    assert model.calls == []


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("value", [None, "", 3, ["m"]], ids=["absent", "empty", "int", "list"])
def test_a_missing_model_is_400_naming_the_field(client: TestClient, path: str, value: Any) -> None:
    field = ENDPOINTS[path]
    body = {} if value is None else {field: value}
    err = _assert_error(_post(client, body, path), 400, param=field)
    assert err["message"] == f"you must provide a '{field}' parameter"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_an_unknown_model_is_404(client: TestClient, model: Model_, path: str) -> None:
    field = ENDPOINTS[path]
    response = _post(client, {field: "x"}, path)
    err = _assert_error(response, 404, param=field, code="model_not_found")
    # OpenAI's answer for a model that does not exist or that the key may not use
    assert err["message"] == "The model 'x' does not exist or you do not have access to it."
    assert err["type"] == "invalid_request_error"
    assert model.calls == []


def test_ids_are_routed_per_endpoint(client: TestClient, model: Model_) -> None:
    # "rag" is a chat and responses model (a pipeline) but not a completions model.
    assert _post(client, {"model": "rag"}).status_code == 200
    assert _post(client, {"model": "rag"}, "/v1/completions").status_code == 404
    assert _post(client, {"model": "rag"}, "/v1/responses").status_code == 200
    assert _post(client, {"pipeline": "rag"}, "/v1/retrieve").status_code == 200
    assert [method for method, _ in model.calls] == ["chat", "responses", "retrieve"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_json_answer_is_returned_as_is(client: TestClient, model: Model_, path: str) -> None:
    body = {ENDPOINTS[path]: "rag" if path == "/v1/retrieve" else "m", "n": 2, "text": "Grüße"}
    response = _post(client, body, path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    method = path.removeprefix("/v1/").lstrip("/").replace("chat/completions", "chat")
    assert response.json() == {"object": "answer", "method": method, "echo": body}
    assert model.calls == [(method, body)]


@pytest.mark.parametrize("code", [400, 404, 413, 429, 503])
def test_an_error_answer_sets_the_http_status(client: TestClient, code: int) -> None:
    response = _post(client, {"model": "m", "do": f"error:{code}"})
    assert response.status_code == code
    assert response.json() == _error_answer(str(code))


def test_an_error_answer_without_a_usable_code_is_500(client: TestClient) -> None:
    response = _post(client, {"model": "m", "do": "error:junk"})
    assert response.status_code == 500
    assert response.json() == _error_answer("junk")


# --- errors raised by the model before any output -----------------------------


def test_an_api_error_from_the_model_keeps_its_status_and_param(client: TestClient) -> None:
    response = _post(client, {"model": "m", "do": "raise:api400"})
    err = _assert_error(response, 400, param="messages")
    assert err == {
        "message": "prompt is longer than the context",
        "type": "invalid_request_error",
        "param": "messages",
        "code": 400,
    }


def test_an_overloaded_model_is_429_with_retry_after(client: TestClient) -> None:
    response = _post(client, {"model": "m", "do": "raise:backpressure"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    err = response.json()["error"]
    assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
    assert err["message"].startswith("'m' is at capacity")


def test_a_dead_replica_is_503_with_retry_after(client: TestClient) -> None:
    response = _post(client, {"model": "m", "do": "raise:actor_died"})
    err = _assert_error(response, 503)
    assert response.headers["retry-after"] == "1"
    assert err["message"].startswith("'m' is unavailable")


def test_a_dead_replica_is_tried_four_times_then_503(client: TestClient, model: Model_) -> None:
    _post(client, {"model": "m", "do": "raise:actor_died"})
    assert len(model.calls) == 4


@pytest.mark.parametrize("failure", ["actor_died", "503"])
def test_a_call_that_failed_before_its_first_byte_is_replayed(
    client: TestClient, model: Model_, failure: str
) -> None:
    response = _post(client, {"model": "m", "do": f"flaky:{failure}"})
    assert response.status_code == 200
    assert response.json()["object"] == "answer"
    assert len(model.calls) == 2


def test_a_stream_that_failed_after_its_first_byte_is_not_replayed(
    client: TestClient, model: Model_
) -> None:
    response = _post(client, {"model": "m", "do": "stream:actor_died"})
    assert '"code": 503' in response.text or '"code":503' in response.text
    assert len(model.calls) == 1


def test_an_unexpected_error_is_500_without_details(client: TestClient) -> None:
    response = _post(client, {"model": "m", "do": "raise:runtime"})
    err = _assert_error(response, 500)
    assert err["message"] == "internal server error"
    assert SECRET not in response.text
    assert "Traceback" not in response.text


def test_a_model_that_answers_nothing_is_500(client: TestClient) -> None:
    err = _assert_error(_post(client, {"model": "m", "do": "empty"}), 500)
    assert err["message"] == "internal server error"


# --- streaming ----------------------------------------------------------------


def test_stream_events_are_relayed_byte_for_byte_in_order(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "m", "do": "stream"},
        headers=AUTH,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        raw = response.read()
    assert raw == "".join(EVENTS).encode()
    assert raw.endswith(b"data: [DONE]\n\n")
    assert raw.count(b"[DONE]") == 1


def test_stream_on_completions_too(client: TestClient) -> None:
    response = _post(client, {"model": "m", "do": "stream"}, "/v1/completions")
    assert response.status_code == 200
    assert response.content == "".join(EVENTS).encode()


def _sse_data(raw: bytes) -> list[str]:
    events = raw.decode().split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") for e in events[:-1])
    return [e.removeprefix("data: ") for e in events[:-1]]


def test_an_error_mid_stream_is_an_error_event_then_done(client: TestClient) -> None:
    events = EVENTS[:3]
    response = _post(client, {"model": "m", "do": "stream:runtime"})
    assert response.status_code == 200  # the headers were already sent
    assert response.content.startswith("".join(events).encode())
    data = _sse_data(response.content)
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2]) == {
        "error": {
            "message": "internal server error",
            "type": "internal_server_error",
            "param": None,
            "code": 500,
        }
    }
    assert len(data) == len(events) + 2
    assert SECRET not in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        ("api400", 400, "prompt is longer than the context"),
        ("actor_died", 503, "'m' is unavailable; retry after the time in Retry-After"),
    ],
)
def test_a_mid_stream_error_keeps_its_status_in_the_event(
    client: TestClient, exc: str, code: int, message: str
) -> None:
    data = _sse_data(_post(client, {"model": "m", "do": f"stream:{exc}"}).content)
    assert data[-1] == "[DONE]"
    err = json.loads(data[-2])["error"]
    assert (err["code"], err["message"]) == (code, message)


# --- routes and model list ------------------------------------------------------


@pytest.fixture
def chat_only(model: Model_) -> Iterator[TestClient]:
    yield from _client(_table(model))


@pytest.mark.parametrize("path", [p for p in ENDPOINTS if p != "/v1/chat/completions"])
def test_routes_without_targets_do_not_exist(
    chat_only: TestClient, model: Model_, path: str
) -> None:
    response = _post(chat_only, {ENDPOINTS[path]: "m"}, path)
    assert response.status_code == 404
    assert model.calls == []
    assert _post(chat_only, {"model": "m"}).status_code == 200


def test_an_absent_route_answers_in_the_openai_error_shape(chat_only: TestClient) -> None:
    _assert_error(_post(chat_only, {"model": "m"}, "/v1/embeddings"), 404)


def test_chat_routes_take_post_only(client: TestClient) -> None:
    _assert_error(client.get("/v1/chat/completions", headers=AUTH), 405)


def test_models_lists_the_model_cards(client: TestClient) -> None:
    response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    assert [card["id"] for card in listing["data"]] == ["m", "rag"]
    for card, item in zip(CARDS, listing["data"], strict=True):
        assert item | card == item  # every card field is listed
        model = Model.model_validate(item)  # the openai SDK's own type
        assert (model.object, model.owned_by) == ("model", "llmserve")
        assert model.created > 0


def test_models_is_empty_without_cards() -> None:
    for client in _client(_table(served={})):
        assert client.get("/v1/models", headers=AUTH).json() == {"object": "list", "data": []}


# --- /metrics ----------------------------------------------------------------------


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _engine_metrics(running: float, finished: float = 0) -> bytes:
    """One LLM server replica's registry: the same series in every replica."""
    registry = CollectorRegistry()
    gauge = Gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        ["model_name", "engine"],
        registry=registry,
    )
    gauge.labels("m", "0").set(running)
    counter = Counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        ["model_name", "engine", "finished_reason"],
        registry=registry,
    )
    counter.labels("m", "0", "length").inc(finished)
    return generate_latest(registry)


def _scrape_errors(deployment: str) -> float:
    from prometheus_client import REGISTRY

    labels = {"deployment": deployment}
    return REGISTRY.get_sample_value("llmserve_metrics_scrape_errors_total", labels) or 0.0


def _by_replica(family, sample_name: str) -> dict[str, float]:
    # Outside a Serve replica the ingress's own samples carry no replica label; they
    # are this test process's, e.g. from an engine an earlier test ran in-process.
    return {
        s.labels["replica"]: s.value
        for s in family.samples
        if s.name == sample_name and "replica" in s.labels
    }


def test_metrics_has_every_replica_once_and_skips_the_failed_and_the_late(model: Model_) -> None:
    llm = MetricsSource("llm-m", {"r1": _engine_metrics(3), "r2": _engine_metrics(5), "r3": FAIL})
    rag = MetricsSource("rag-p", {"r4": HANG})
    errors_before = _scrape_errors("llm-m"), _scrape_errors("rag-p")
    for client in _client(_table(model, metrics_sources=[llm, rag]), metrics_timeout_s=0.3):
        assert _post(client, {"model": "m"}).status_code == 200
        response = client.get("/metrics", headers=AUTH)
        assert response.elapsed.total_seconds() < 2  # the hung replica waits 0.3 s, not 1 h
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert llm.broadcasts == rag.broadcasts == ["metrics_text"]
    families = _families(response.text)
    running = _by_replica(families["vllm:num_requests_running"], "vllm:num_requests_running")
    assert running == {"r1": 3.0, "r2": 5.0}
    # the ingress's own series (outside Serve this process has no replica id)
    requests = [
        s
        for s in families["llmserve_requests"].samples
        if s.name == "llmserve_requests_total"
        and s.labels == {"model": "m", "endpoint": "chat", "status": "200"}
    ]
    assert requests and requests[0].value >= 1
    # each skipped replica is counted, and this very scrape shows it
    assert (_scrape_errors("llm-m"), _scrape_errors("rag-p")) == (
        errors_before[0] + 1,
        errors_before[1] + 1,
    )
    errors = _families(response.text)["llmserve_metrics_scrape_errors"].samples
    shown = {s.labels["deployment"]: s.value for s in errors if s.name.endswith("_total")}
    assert shown["rag-p"] == errors_before[1] + 1


def test_metrics_without_per_replica_results_still_reaches_every_replica() -> None:
    llm = MetricsSource("llm-m", {"r1": _engine_metrics(1), "r2": _engine_metrics(2)}, False)
    for client in _client(_table(served={}, metrics_sources=[llm])):
        text = client.get("/metrics", headers=AUTH).text
    running = _by_replica(_families(text)["vllm:num_requests_running"], "vllm:num_requests_running")
    assert running == {"r1": 1.0, "r2": 2.0}


def test_merge_exposition_keeps_each_replicas_series_apart() -> None:
    def ingress(replica: str, answered: int) -> metrics.ReplicaMetrics:
        registry = CollectorRegistry()
        counter = Counter(
            "llmserve_requests", "Requests.", ["model", "endpoint", "status"], registry=registry
        )
        counter.labels("m", "chat", "200").inc(answered)
        hist = Histogram("llmserve_stage_seconds", "Stage time.", ["stage"], registry=registry)
        hist.labels("retrieve").observe(0.02 * answered)
        return metrics.ReplicaMetrics(replica, generate_latest(registry))

    a = ingress("a1", 5)
    merged = metrics.merge_exposition([a, ingress("b2", 7), a]).decode()  # a twice: kept once

    # (prometheus_client names a counter's HELP/TYPE after its _total samples)
    for name in ("llmserve_requests_total", "llmserve_stage_seconds"):
        assert merged.count(f"# HELP {name} ") == 1, merged
        assert merged.count(f"# TYPE {name} ") == 1, merged
    families = _families(merged)
    answered = _by_replica(families["llmserve_requests"], "llmserve_requests_total")
    assert answered == {"a1": 5.0, "b2": 7.0}
    assert sum(answered.values()) == 12
    assert families["llmserve_requests"].type == "counter"
    hist = families["llmserve_stage_seconds"]
    assert hist.type == "histogram"
    assert _by_replica(hist, "llmserve_stage_seconds_count") == {"a1": 1.0, "b2": 1.0}
    buckets = [s for s in hist.samples if s.name == "llmserve_stage_seconds_bucket"]
    assert {s.labels["replica"] for s in buckets} == {"a1", "b2"}
    # every sample line is unique: a scrape with duplicate series is rejected whole
    lines = [line for line in merged.splitlines() if line and not line.startswith("#")]
    assert len(lines) == len(set(lines))


def test_merge_exposition_of_nothing_is_empty() -> None:
    assert metrics.merge_exposition([]) == b""


# --- overload, timeouts, health ---------------------------------------------------


def test_an_in_process_model_over_its_limits_is_429_at_once(model: Model_) -> None:
    from prometheus_client import REGISTRY

    def counted(status: str) -> float:
        labels = {"model": "m", "endpoint": "chat", "status": status}
        return REGISTRY.get_sample_value("llmserve_requests_total", labels) or 0.0

    before = {s: counted(s) for s in ("429", "504")}
    for client in _client(_table(model, limits=(1, 0), timeout_s=5)):
        refused, hung = asyncio.run(_while_one_hangs(client, model, "m"))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert hung.status_code == 504  # its own 5 s limit
        assert model.ended == ["started", "closed"]
    assert {s: counted(s) - before[s] for s in before} == {"429": 1, "504": 1}


async def _while_one_hangs(client: TestClient, model: Model_, other: str):
    """A chat request to ``m`` that hangs and, while it does, one to ``other``.
    Returns (the other's response, the hung one's once it ends)."""
    import httpx

    transport = httpx.ASGITransport(app=client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        hung = asyncio.create_task(
            c.post("/v1/chat/completions", json={"model": "m", "do": "hang"}, headers=AUTH)
        )
        while "started" not in model.ended:
            await asyncio.sleep(0.01)
        answer = await c.post("/v1/chat/completions", json={"model": other}, headers=AUTH)
        return answer, await hung


def test_a_lora_adapter_is_served_through_its_base_model(model: Model_) -> None:
    """An adapter id reaches its base's handle with its own name (the engine picks the
    adapter by it), on every route the base has, and shares the base's gate and timeout."""
    routes, clients = _table(model, {"m": GENERATION_ENDPOINTS}, limits=(1, 0), timeout_s=5)
    base = routes.routes["m"]
    routes.add(replace(base, id="m-a", card={"id": "m-a", "parent": "m"}, base="m"))
    clients["m-a"] = clients["m"]
    for client in _client((routes, clients)):
        paths = ("/v1/chat/completions", "/v1/completions", "/v1/responses")
        for path in (*paths, "/tokenize", "/detokenize"):
            assert _post(client, {"model": "m-a"}, path).status_code == 200
        assert [(method, body["model"]) for method, body in model.calls] == [
            ("chat", "m-a"),
            ("completions", "m-a"),
            ("responses", "m-a"),
            ("tokenize", "m-a"),
            ("detokenize", "m-a"),
        ]
        _assert_error(_post(client, {"model": "m-b"}), 404, "model", code="model_not_found")

        refused, hung = asyncio.run(_while_one_hangs(client, model, "m-a"))
        assert refused.status_code == 429  # the base's one slot is taken
        assert hung.status_code == 504  # the base's own 5 s limit


def test_a_request_past_its_timeout_is_504_and_its_work_is_closed(model: Model_) -> None:
    for client in _client(_table(model, timeout_s=0.2)):
        err = _assert_error(_post(client, {"model": "m", "do": "hang"}), 504)
        assert err["type"] == "timeout_error"
    assert model.ended == ["started", "closed"]


def test_a_stream_past_its_timeout_ends_with_a_504_event(model: Model_) -> None:
    for client in _client(_table(model), timeout_s=0.2):
        data = _sse_data(_post(client, {"model": "m", "do": "hang:stream"}).content)
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["code"] == 504
    assert model.ended == ["started", "closed"]


def test_a_client_that_leaves_before_the_first_chunk_cancels_cleanly(model: Model_) -> None:
    """CancelledError passes through (it is not a 500), and the model's work is closed."""
    route = Route("m", CHAT, {"id": "m"})
    target = ingress_call.Target(route, LocalClient(model), 60, None, {})

    async def run() -> None:
        call = asyncio.create_task(
            ingress_call.call(target, Endpoint.CHAT, {"do": "hang"}, NO_META)
        )
        while "started" not in model.ended:
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(run())
    assert model.ended == ["started", "closed"]


class _Health:
    def __init__(self, problem: str | None, missing: tuple[str, ...] = ()) -> None:
        self._problem = problem
        self._missing = list(missing)

    async def problem(self) -> str | None:
        return self._problem

    async def missing_deployments(self) -> list[str]:
        return self._missing

    def known_missing(self, deployment: str) -> bool:
        return deployment in self._missing


def test_a_model_without_a_running_replica_is_unlisted_and_503_at_once(model: Model_) -> None:
    # Served by a deployment (it has a name), answering in-process here.
    routes = _table(model, deployment="llm-m")
    for client in _client(routes, api_keys=[], health=_Health(None, missing=("llm-m",))):
        assert client.get("/v1/models").json()["data"] == []
        response = _post(client, {"model": "m"})
        _assert_error(response, 503)
        assert response.headers["retry-after"] == "1"
        assert model.calls == []  # not even tried
    for client in _client(routes, api_keys=[], health=_Health(None)):
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["m"]
        assert _post(client, {"model": "m"}).status_code == 200


def test_health_is_503_with_retry_after_when_an_engine_is_down(model: Model_) -> None:
    routes = _table(model)
    for client in _client(routes, health=_Health("no healthy replica for: llm-m")):
        response = client.get("/health")
        err = _assert_error(response, 503)
        assert err["message"] == "no healthy replica for: llm-m"
        assert response.headers["retry-after"] == "1"
    for client in _client(routes, health=_Health(None)):
        assert client.get("/health").json() == {"status": "ok"}


def test_only_the_health_route_itself_skips_auth(client: TestClient) -> None:
    # A path that merely ends with /health is not the health check.
    for path in ("/v1/models/health", "/x/health"):
        _assert_error(client.get(path), 401)
