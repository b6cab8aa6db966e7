"""Per-request cost caps: every capped field of every endpoint, and the 400 past one.

The caps come from the config's ``limits`` blocks (and a pipeline's ``max_top_k`` /
``max_top_n``); they are checked in the ingress before admission and before any
call, which the app-level tests here show by a request that never reaches ``call``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmserve.config import (
    EmbedderLimits,
    GenerationLimits,
    IngressConfig,
    PipelineConfig,
    RerankerLimits,
)
from llmserve.ingress import app as ingress_app
from llmserve.ingress.app import build_ingress_app
from llmserve.ingress.caps import NO_CAPS, RULES, Caps, check
from llmserve.ingress.routes import Route, RouteTable
from llmserve.openai.errors import APIError
from llmserve.servers.clients import LocalClient
from llmserve.servers.protocol import (
    EMBEDDING_ENDPOINTS,
    GENERATION_ENDPOINTS,
    PIPELINE_ENDPOINTS,
    RERANK_ENDPOINTS,
    Endpoint,
)

pytestmark = pytest.mark.unit

# Small limits, each different, so a test shows which one applied.
MODEL = Caps.for_model(
    GenerationLimits(max_n=2, max_prompts=3, max_tokens=50, max_stop=1, max_top_logprobs=5)
)
EMBEDDER = Caps.for_embedder(EmbedderLimits(max_inputs=4))
RERANKER = Caps.for_reranker(RerankerLimits(max_documents=6))
PIPELINE = Caps.for_pipeline(
    PipelineConfig(
        id="p", retriever="r", generator="g", top_k=5, max_top_k=7, top_n=2, max_top_n=3
    ),
    GenerationLimits(max_n=2, max_tokens=50, max_stop=1, max_top_logprobs=5),
)

C, X, R = Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES
# (caps, endpoint, field, the largest value allowed, a value past it, the limit named)
PAST = [
    (MODEL, C, "n", 2, 3, 2),
    (MODEL, C, "best_of", 2, 3, 2),
    (MODEL, X, "n", 2, 512, 2),
    (MODEL, X, "best_of", 2, 3, 2),
    (MODEL, C, "max_tokens", 50, 51, 50),
    (MODEL, C, "max_completion_tokens", 50, 51, 50),
    (MODEL, X, "max_tokens", 50, 51, 50),
    (MODEL, R, "max_output_tokens", 50, 51, 50),
    (MODEL, C, "stop", ["a"], ["a", "b"], 1),
    (MODEL, C, "stop", "one", ["a", "b"], 1),
    (MODEL, X, "stop", ["a"], ["a", "b"], 1),
    (MODEL, R, "stop", ["a"], ["a", "b"], 1),
    (MODEL, C, "top_logprobs", 5, 6, 5),
    (MODEL, C, "top_logprobs", 5, -1, 5),
    (MODEL, C, "prompt_logprobs", 5, 6, 5),
    (MODEL, X, "logprobs", 5, 6, 5),
    (MODEL, X, "prompt_logprobs", 5, -1, 5),
    (MODEL, R, "top_logprobs", 5, 6, 5),
    (MODEL, X, "prompt", ["a", "b", "c"], ["a", "b", "c", "d"], 3),
    (MODEL, X, "prompt", [[1, 2]] * 3, [[1, 2]] * 4, 3),
    (EMBEDDER, Endpoint.EMBEDDINGS, "input", ["a"] * 4, ["a"] * 5, 4),
    (EMBEDDER, Endpoint.EMBEDDINGS, "input", [[1]] * 4, [[1]] * 5, 4),
    (RERANKER, Endpoint.RERANK, "documents", ["d"] * 6, ["d"] * 7, 6),
    (PIPELINE, C, "n", 2, 3, 2),
    (PIPELINE, C, "max_tokens", 50, 51, 50),
    (PIPELINE, R, "max_output_tokens", 50, 51, 50),
    (PIPELINE, C, "rag.top_k", 7, 8, 7),
    (PIPELINE, C, "rag.top_n", 3, 4, 3),
    (PIPELINE, R, "rag.top_k", 7, 8, 7),
    (PIPELINE, R, "rag.top_n", 3, 4, 3),
    (PIPELINE, Endpoint.RETRIEVE, "top_k", 7, 8, 7),
]
COUNTS = {"stop": "stop strings", "prompt": "prompts", "input": "inputs", "documents": "documents"}


def body_with(field: str, value: Any) -> dict[str, Any]:
    if field.startswith("rag."):
        return {"model": "t", "rag": {field.removeprefix("rag."): value}}
    return {"model": "t", field: value}


def _refusal(caps: Caps, endpoint: Endpoint, body: dict[str, Any]) -> APIError:
    with pytest.raises(APIError) as err:
        check(caps, endpoint, body, "t")
    return err.value


@pytest.mark.parametrize(("caps", "endpoint", "field", "ok", "past", "limit"), PAST)
def test_a_field_past_its_cap_is_400_naming_the_field_and_the_cap(
    caps: Caps, endpoint: Endpoint, field: str, ok: Any, past: Any, limit: int
) -> None:
    check(caps, endpoint, body_with(field, ok), "t")
    err = _refusal(caps, endpoint, body_with(field, past))
    assert (err.status, err.param, err.type) == (400, field, "invalid_request_error")
    if field in COUNTS:
        want = f"{field} holds {len(past)} {COUNTS[field]}; 't' takes at most {limit} per request"
    else:
        shown = "-1 (the whole vocabulary)" if past == -1 else past
        want = f"{field} must be at most {limit} for 't' (got {shown})"
    assert err.message == want


def test_every_capped_field_is_tested() -> None:
    tested = {(endpoint, field) for _, endpoint, field, *_ in PAST}
    ruled = {(endpoint, rule.param) for endpoint, rules in RULES.items() for rule in rules}
    assert ruled == tested


@pytest.mark.parametrize("value", ["512", 512.0, " 512 "])
def test_numbers_are_read_as_vllm_reads_them(value: Any) -> None:
    assert _refusal(MODEL, C, {"n": value}).param == "n"


@pytest.mark.parametrize(
    "value", [None, "many", 2.5, [3], {"n": 3}, 1e30, float("inf"), -5], ids=repr
)
def test_a_value_of_the_wrong_type_is_left_to_vllms_own_validation(value: Any) -> None:
    for field in ("n", "max_tokens", "top_logprobs", "stop", "prompt", "rag"):
        check(MODEL, C, {field: value}, "t")
        check(PIPELINE, C, {field: value}, "t")
    check(EMBEDDER, Endpoint.EMBEDDINGS, {"input": value}, "t")
    check(RERANKER, Endpoint.RERANK, {"documents": value}, "t")


def test_one_prompt_of_token_ids_is_one_prompt() -> None:
    check(MODEL, X, {"prompt": list(range(1000))}, "t")
    check(EMBEDDER, Endpoint.EMBEDDINGS, {"input": list(range(1000))}, "t")
    check(EMBEDDER, Endpoint.EMBEDDINGS, {"input": "x" * 1000}, "t")


def test_what_a_kind_does_not_cap_passes() -> None:
    # A plain model has no rag block to cap, tokenize is cheap, and no caps at all is none.
    check(MODEL, C, {"rag": {"top_k": 10**6}}, "t")
    check(MODEL, Endpoint.TOKENIZE, {"prompt": ["a"] * 100}, "t")
    for endpoint in Endpoint:
        check(
            NO_CAPS, endpoint, {"n": 10**6, "documents": ["d"] * 10**4, "input": ["a"] * 10**4}, "t"
        )


def test_a_model_without_a_max_tokens_cap_leaves_it_to_the_context() -> None:
    caps = Caps.for_model(GenerationLimits())
    assert caps.max_tokens is None
    check(caps, C, {"max_tokens": 10**9}, "t")


def test_the_defaults_cap_the_measured_abuses() -> None:
    # From issue 17: n 512 held a CPU engine 42 s; 100,000 documents held a reranker minutes.
    assert _refusal(Caps.for_model(GenerationLimits()), C, {"n": 512}).param == "n"
    docs = {"documents": ["d"] * 100_000}
    assert _refusal(Caps.for_reranker(RerankerLimits()), Endpoint.RERANK, docs).param == "documents"
    inputs = {"input": ["d"] * 100_000}
    caps = Caps.for_embedder(EmbedderLimits())
    assert _refusal(caps, Endpoint.EMBEDDINGS, inputs).param == "input"


# --- in the app: before admission, before any call ----------------------------


class Server:
    """A ``StreamingServer`` that answers everything and records what reached it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def respond(self, endpoint: Endpoint, body: dict[str, Any], meta: Any) -> Any:
        self.bodies.append(body)
        yield {"object": "answer"}


ROUTES = {
    "m": (GENERATION_ENDPOINTS, MODEL),
    "adapter": (GENERATION_ENDPOINTS, MODEL),
    "e": (EMBEDDING_ENDPOINTS, EMBEDDER),
    "r": (RERANK_ENDPOINTS, RERANKER),
    "p": (PIPELINE_ENDPOINTS, PIPELINE),
}


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    routes = RouteTable()
    for id_, (endpoints, caps) in ROUTES.items():
        # In-process routes take an admission gate: a capped request must never enter it.
        routes.add(Route(id_, endpoints, {"id": id_}, limits=(1, 0), caps=caps))
    clients = {id_: LocalClient(server) for id_ in ROUTES}
    app = build_ingress_app(IngressConfig(), [], routes, clients)
    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "m", "n": 512, "max_tokens": 1}, "n"),
        (
            "/v1/chat/completions",
            {"model": "adapter", "max_completion_tokens": 51},
            "max_completion_tokens",
        ),
        ("/v1/completions", {"model": "m", "prompt": ["p"] * 100}, "prompt"),
        ("/v1/responses", {"model": "m", "max_output_tokens": 10**6}, "max_output_tokens"),
        ("/v1/embeddings", {"model": "e", "input": ["a"] * 100_000}, "input"),
        ("/v1/rerank", {"model": "r", "query": "q", "documents": ["d"] * 100_000}, "documents"),
        ("/v1/chat/completions", {"model": "p", "rag": {"top_k": 100}}, "rag.top_k"),
        ("/v1/retrieve", {"pipeline": "p", "query": "q", "top_k": 100}, "top_k"),
    ],
)
def test_a_capped_request_is_refused_before_admission_and_any_call(
    client: TestClient,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: dict,
    param: str,
) -> None:
    async def no_call(*args: Any) -> None:
        raise AssertionError("a capped request reached admission")

    monkeypatch.setattr(ingress_app, "call", no_call)
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, 400, "invalid_request_error")
    assert server.bodies == []


def test_a_request_within_its_caps_is_served(client: TestClient, server: Server) -> None:
    body = {"model": "r", "query": "q", "documents": ["d"] * 6}
    assert client.post("/v1/rerank", json=body).json() == {"object": "answer"}
    assert server.bodies == [body]
