"""Tenants in the ingress: keys to tenants, model access, what the ingress writes into the
body, rate limits in OpenAI's headers and 429s (with the real OpenAI SDK retrying), and
the usage counted per tenant.

The app is the real one from ``build_ingress_app``, with a ``TenantTable`` built from a
real config; the model behind it is a small ``StreamingServer`` that answers like vLLM
(usage in a JSON answer, a usage chunk at the end of a stream when asked for one) and
records what it was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from vllm.entrypoints.generate.base.protocol import validate_cache_salt

from llmserve.config import IngressConfig
from llmserve.ingress.app import build_ingress_app
from llmserve.ingress.routes import Route, RouteTable
from llmserve.ingress.tenants import TenantTable, cache_salt
from llmserve.openai import sse
from llmserve.openai.errors import error_body
from llmserve.servers.clients import LocalClient
from llmserve.servers.protocol import GENERATION_ENDPOINTS, NO_META, Endpoint, RequestMeta

pytestmark = pytest.mark.unit

USAGE = {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50}
TENANTS = [
    {"id": "team-a", "api_key": "key-a", "requests_per_minute": 600},
    {"id": "team-b", "api_keys": ["key-b1", "key-b2"], "models": ["m"], "priority": "high"},
    {"id": "secret", "api_key": "key-s", "cache_isolation": True, "priority": "low"},
    {"id": "metered", "api_key": "key-t", "tokens_per_minute": 1000},
]


class Server:
    """Answers like vLLM's serving classes, and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Endpoint, dict[str, Any], RequestMeta]] = []

    async def respond(self, endpoint: Endpoint, body: dict[str, Any], meta=NO_META):
        self.calls.append((endpoint, body, meta))
        if body.get("busy"):  # a full engine queue, before any work
            yield error_body(429, "busy")
            return
        if not body.get("stream"):
            yield {"object": "chat.completion", "choices": [], "usage": USAGE}
            return
        for text in ("Hel", "lo"):
            await asyncio.sleep(0)
            yield sse.data_text({"id": "c", "choices": [{"index": 0, "delta": {"content": text}}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            yield sse.data_text({"id": "c", "choices": [], "usage": USAGE})  # vLLM's, compact
        yield "data: [DONE]\n\n"

    @property
    def last(self) -> tuple[dict[str, Any], RequestMeta]:
        return self.calls[-1][1], self.calls[-1][2]


def _app(server: Server, tenants: list[dict] | None = TENANTS, api_keys=("anon",)):
    config = IngressConfig.model_validate(
        {"api_keys": list(api_keys), "tenants": tenants or [], "request_timeout_s": 30}
    )
    table = TenantTable.build(config, config.resolve_api_keys(), lambda: 1)
    routes = RouteTable()
    for id_ in ("m", "other"):
        routes.add(Route(id_, GENERATION_ENDPOINTS, {"id": id_}))
    clients = {id_: LocalClient(server) for id_ in routes.routes}
    return build_ingress_app(config, config.resolve_api_keys(), routes, clients, tenants=table)


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    with TestClient(_app(server)) as client:
        yield client


def _post(client: TestClient, key: str, body: dict, path: str = "/v1/chat/completions"):
    return client.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- who calls ----------------------------------------------------------------


def test_keys_resolve_to_their_tenant_and_unknown_keys_are_401(client, server) -> None:
    for key, tenant in [("key-a", "team-a"), ("key-b1", "team-b"), ("key-b2", "team-b")]:
        assert _post(client, key, {"model": "m"}).status_code == 200
        assert server.last[1].tenant == tenant
    assert _post(client, "anon", {"model": "m"}).status_code == 200
    assert server.last[1].tenant is None  # an ingress.api_keys caller: no tenant
    assert _post(client, "key-c", {"model": "m"}).status_code == 401
    assert client.post("/v1/chat/completions", json={"model": "m"}).status_code == 401


def test_an_env_key_is_read_in_the_replica_and_two_callers_may_not_share_a_key(
    monkeypatch,
) -> None:
    monkeypatch.setenv("LLMSERVE_TEST_TEAM_KEY", "anon")
    tenant = {"id": "t", "api_key": {"env": "LLMSERVE_TEST_TEAM_KEY"}}
    config = IngressConfig.model_validate({"api_keys": ["anon"], "tenants": [tenant]})
    with pytest.raises(ValueError, match="same key"):
        TenantTable.build(config, config.resolve_api_keys(), lambda: 1)
    monkeypatch.setenv("LLMSERVE_TEST_TEAM_KEY", "from-env")
    table = TenantTable.build(config, config.resolve_api_keys(), lambda: 1)
    assert table.resolve(b"Bearer from-env").id == "t"


# --- model access ---------------------------------------------------------------


def test_a_model_outside_the_list_is_the_same_404_as_an_unknown_one(client, server) -> None:
    denied = _post(client, "key-b1", {"model": "other"})
    unknown = _post(client, "key-b1", {"model": "nope"})
    assert denied.status_code == unknown.status_code == 404
    assert denied.json()["error"] == {
        "message": "The model 'other' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert (
        unknown.json()["error"]["message"].replace("nope", "other")
        == (denied.json()["error"]["message"])
    )
    assert server.calls == []
    assert _post(client, "key-a", {"model": "other"}).status_code == 200  # no list: all


def test_v1_models_lists_only_what_the_tenant_may_call(client) -> None:
    def listed(key: str) -> list[str]:
        response = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        return [m["id"] for m in response.json()["data"]]

    assert listed("key-b1") == ["m"]
    assert listed("key-a") == listed("anon") == ["m", "other"]


def test_metrics_are_for_the_operators_keys_not_for_tenants(client) -> None:
    # every tenant's usage and every model's name are in it
    response = client.get("/metrics", headers={"Authorization": "Bearer key-b1"})
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"
    response = client.get("/metrics", headers={"Authorization": "Bearer anon"})
    assert response.status_code == 200


# --- what the ingress writes into the body ----------------------------------------


def test_clients_cannot_choose_their_priority(client, server) -> None:
    _post(client, "key-b1", {"model": "m", "priority": -100})
    body, meta = server.last
    assert "priority" not in body  # the LLM server sets vLLM's from meta.priority
    assert meta.priority == "high"
    _post(client, "key-s", {"model": "m", "priority": -100}, "/v1/completions")
    assert "priority" not in server.last[0] and server.last[1].priority == "low"
    _post(client, "anon", {"model": "m", "priority": -100})
    assert "priority" not in server.last[0] and server.last[1].priority == "normal"


def test_an_isolated_tenant_gets_its_own_salt_on_every_engine_route(client, server) -> None:
    salt = cache_salt("secret", "key-s")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
        _post(client, "key-s", {"model": "m", "cache_salt": "mine"}, path)
        assert server.last[0]["cache_salt"] == salt  # a client's own is overridden
    validate_cache_salt(salt)  # what vLLM accepts
    # the same in every replica (the same key and id), different for another tenant or key
    assert cache_salt("secret", "key-s") == salt
    assert len({salt, cache_salt("other", "key-s"), cache_salt("secret", "key-x")}) == 3
    assert "key-s" not in salt
    # tokenize reaches no prefix cache: left alone
    _post(client, "key-s", {"model": "m", "prompt": "x"}, "/tokenize")
    assert "cache_salt" not in server.last[0]


def test_a_salt_other_clients_send_can_never_equal_a_tenants(client, server) -> None:
    salt = cache_salt("secret", "key-s")
    _post(client, "key-a", {"model": "m", "cache_salt": salt})
    sent = server.last[0]["cache_salt"]
    assert sent != salt and sent.startswith("client-")
    validate_cache_salt(sent)
    _post(client, "anon", {"model": "m", "cache_salt": salt})
    assert server.last[0]["cache_salt"] == sent  # the same client salt: the same value
    _post(client, "key-a", {"model": "m"})
    assert "cache_salt" not in server.last[0]


def test_without_tenants_bodies_pass_untouched(server) -> None:
    with TestClient(_app(server, tenants=None)) as client:
        body = {"model": "m", "priority": 3, "cache_salt": "s", "stream": True}
        response = _post(client, "anon", body)
        assert response.status_code == 200
        assert server.last[0] == body
        assert server.last[1] == NO_META
        assert "data: [DONE]" in response.text


# --- rate limits ----------------------------------------------------------------


def test_every_answer_to_a_limited_tenant_carries_openais_headers(client) -> None:
    answers = [
        _post(client, "key-a", {"model": "m"}),
        _post(client, "key-a", {"model": "m", "stream": True}),
        _post(client, "key-a", {"model": "nope"}),
        _post(client, "key-a", {"model": "m", "busy": True}),
        client.get("/v1/models", headers={"Authorization": "Bearer key-a"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 429, 200]
    for answer in answers:
        assert answer.headers["x-ratelimit-limit-requests"] == "600"
        assert answer.headers["x-ratelimit-reset-requests"].endswith("ms")
        assert "x-ratelimit-limit-tokens" not in answer.headers  # no tokens limit
    # two requests taken (a 404 never reaches the limiter, a 429 for capacity is refunded)
    assert answers[-1].headers["x-ratelimit-remaining-requests"] == "598"
    assert "x-ratelimit-limit-requests" not in _post(client, "key-b1", {"model": "m"}).headers


def test_over_its_requests_per_minute_a_tenant_gets_429_before_any_work(server) -> None:
    tenants = [{"id": "limited", "api_key": "k", "requests_per_minute": 3}]
    with TestClient(_app(server, tenants)) as client:
        before = _metric("llmserve_tenant_rate_limited_total", tenant="limited", reason="requests")
        assert [_post(client, "k", {"model": "m"}).status_code for _ in range(3)] == [200] * 3
        refused = _post(client, "k", {"model": "m"})
        assert len(server.calls) == 3
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "requests"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 19 <= float(refused.headers["retry-after-ms"]) / 1000 <= 20  # one per 20 s
    assert refused.headers["retry-after"] == "20"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    after = _metric("llmserve_tenant_rate_limited_total", tenant="limited", reason="requests")
    assert after == before + 1


def test_tokens_are_reserved_then_settled_with_vllms_usage(client, server) -> None:
    # 1000 tokens a minute; a request reserves its body's bytes / 4 plus max_tokens
    first = _post(client, "key-t", {"model": "m", "max_tokens": 500})
    assert first.status_code == 200
    # headers are written after the answer settled: 50 used, whatever was reserved
    assert 945 <= int(first.headers["x-ratelimit-remaining-tokens"]) <= 950
    big = _post(client, "key-t", {"model": "m", "max_tokens": 990})
    assert big.status_code == 429 and big.json()["error"]["type"] == "tokens"
    assert len(server.calls) == 1
    streamed = _post(client, "key-t", {"model": "m", "max_tokens": 800, "stream": True})
    assert streamed.status_code == 200
    later = client.get("/v1/models", headers={"Authorization": "Bearer key-t"})
    assert 895 <= int(later.headers["x-ratelimit-remaining-tokens"]) <= 902


def test_the_openai_sdk_waits_for_retry_after_and_then_succeeds(server) -> None:
    # 30 a minute: once spent, one more every 2 s; after the 30 calls (under a second,
    # even on a busy machine) the wait is longer than the SDK's own first backoff (at
    # most 0.5 s): only honouring retry-after-ms makes it wait that long
    tenants = [{"id": "sdk", "api_key": "k", "requests_per_minute": 30}]
    with TestClient(_app(server, tenants)) as http:
        for _ in range(30):
            assert _post(http, "k", {"model": "m"}).status_code == 200
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key="k", http_client=http)
        seen: list[httpx.Response] = []
        http.event_hooks["response"].append(seen.append)
        start = time.perf_counter()
        answer = sdk.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        elapsed = time.perf_counter() - start
    assert [r.status_code for r in seen] == [429, 200]  # refused once, retried once
    assert answer.http_response.status_code == 200
    wait_s = int(seen[0].headers["retry-after-ms"]) / 1000
    assert wait_s > 0.6
    assert wait_s - 0.05 <= elapsed < wait_s + 1


# --- usage ---------------------------------------------------------------------


def test_a_stream_reports_usage_to_the_ingress_but_only_to_clients_that_ask(client, server) -> None:
    plain = _post(client, "key-b1", {"model": "m", "stream": True})
    assert server.last[0]["stream_options"] == {"include_usage": True}
    assert '"usage"' not in plain.text and plain.text.endswith("data: [DONE]\n\n")
    asked = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert '"usage":{"prompt_tokens":40' in _post(client, "key-b1", asked).text


def test_usage_is_counted_per_tenant_and_model(client) -> None:
    def counted(kind: str) -> float:
        return _metric("llmserve_tenant_tokens_total", tenant="team-b", model="m", kind=kind)

    def requests(status: str) -> float:
        return _metric("llmserve_tenant_requests_total", tenant="team-b", model="m", status=status)

    def first_chunks() -> float:
        return _metric("llmserve_tenant_time_to_first_chunk_seconds_count", tenant="team-b")

    prompt, completion, ok, busy, ttft = (
        counted("prompt"),
        counted("completion"),
        requests("200"),
        requests("429"),
        first_chunks(),
    )
    _post(client, "key-b1", {"model": "m"})
    _post(client, "key-b1", {"model": "m", "stream": True})
    _post(client, "key-b1", {"model": "m", "busy": True})
    assert counted("prompt") == prompt + 80
    assert counted("completion") == completion + 20
    assert (requests("200"), requests("429")) == (ok + 2, busy + 1)
    assert first_chunks() == ttft + 1
    labels = {"tenant": "anonymous", "model": "m", "status": "200"}
    anonymous = _metric("llmserve_tenant_requests_total", **labels)
    _post(client, "anon", {"model": "m"})
    assert _metric("llmserve_tenant_requests_total", **labels) == anonymous + 1
