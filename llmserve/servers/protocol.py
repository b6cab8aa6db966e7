"""The typed seam between the ingress and the deployments behind it.

Every call that crosses a Serve handle (or, for what runs in the ingress's own
process, an in-process call) is declared here: what each kind of server
answers, the endpoints by name, and what travels with a request besides its
body. The call side lives in ``clients.py``; nothing else names a handle
method.

Error convention (the only one):

1. **A refused request is an answer, not an exception.** Before its first
   item, a server that will not do the work (a bad body, an unknown adapter,
   a dead engine) yields one OpenAI error body, ``{"error": {"message",
   "type", "param", "code"}}`` with the HTTP status in ``code``, and stops.
   Data crosses a handle more cheaply than an exception, and Serve logs every
   raised exception as a replica failure.
2. **A failure after the first item is raised**: ``APIError`` with its status
   (503 for an engine that died mid-stream), or Ray's own errors for a replica
   that died. The ingress ends the stream with an SSE error event, or continues
   it on another replica where it can (``ingress/resume.py``).
3. **Unary calls** (``search``, ``embed``, ``score``) have no stream to carry an
   error body, so they raise ``APIError``.
4. **Handle failures** (``BackPressureError``, no running replica, a dead actor)
   are Ray's exceptions; ``openai.errors.from_exception`` maps them to 429/503.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from llmserve.literals import Priority, SearchMode
from llmserve.observability.metrics import ReplicaMetrics

Body: TypeAlias = dict[str, Any]
"""A request body as the client sent it (parsed JSON), or one built by a router."""
Answer: TypeAlias = dict[str, Any]
"""A whole JSON answer, or an OpenAI error body (see the convention above)."""
Item: TypeAlias = dict[str, Any] | str
"""What a streaming call yields: one ``Answer``, or SSE events (``str``) ending in
``data: [DONE]``, each exactly as the client will receive it."""


class Endpoint(enum.StrEnum):
    """An OpenAI-compatible (or llmserve) API surface, named once."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    RESPONSES = "responses"
    TOKENIZE = "tokenize"
    DETOKENIZE = "detokenize"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"
    RETRIEVE = "retrieve"

    @property
    def path(self) -> str:
        """The HTTP path, below the app's route prefix."""
        return _PATHS[self]

    @property
    def id_field(self) -> str:
        """The body field naming what to call: ``model``, or ``pipeline`` for retrieval."""
        return "pipeline" if self is Endpoint.RETRIEVE else "model"


_PATHS = {
    Endpoint.CHAT: "/v1/chat/completions",
    Endpoint.COMPLETIONS: "/v1/completions",
    Endpoint.RESPONSES: "/v1/responses",
    Endpoint.TOKENIZE: "/tokenize",
    Endpoint.DETOKENIZE: "/detokenize",
    Endpoint.EMBEDDINGS: "/v1/embeddings",
    Endpoint.RERANK: "/v1/rerank",
    Endpoint.RETRIEVE: "/v1/retrieve",
}

# What each kind of server answers. The builder gives every served id the
# endpoints of its kind; the servers' own dispatch tables are tested against these.
GENERATION_ENDPOINTS = frozenset(
    {
        Endpoint.CHAT,
        Endpoint.COMPLETIONS,
        Endpoint.RESPONSES,
        Endpoint.TOKENIZE,
        Endpoint.DETOKENIZE,
    }
)
EMBEDDING_ENDPOINTS = frozenset({Endpoint.EMBEDDINGS})
RERANK_ENDPOINTS = frozenset({Endpoint.RERANK})
PIPELINE_ENDPOINTS = frozenset({Endpoint.CHAT, Endpoint.RESPONSES, Endpoint.RETRIEVE})

FORWARDED_HEADERS = ("x-request-id", "traceparent", "tracestate")
"""Request headers that travel to the server: vLLM takes its request id from
``X-Request-Id`` and its tracing context from the W3C trace headers. Nothing
else does: a header such as vLLM's priority or data-parallel-rank header must
not reach the engine from a client."""


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """What a server needs to know about a request besides its body.

    Small and plain, so that it pickles cheaply across the handle hop.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    """The ``FORWARDED_HEADERS`` the client sent, lower-cased."""
    tenant: str | None = None
    """The caller's tenant id (``ingress.tenants``); None for a caller that is no tenant."""
    priority: Priority = "normal"
    """The caller's priority class; the ingress admits by it, and has already set vLLM's
    ``priority`` in the body where the engine schedules by it."""

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], tenant: str | None = None, priority: Priority = "normal"
    ) -> RequestMeta:
        """Keep only what may be forwarded (``headers`` as Starlette gives them)."""
        kept = {name: value for name in FORWARDED_HEADERS if (value := headers.get(name))}
        if not kept and tenant is None and priority == "normal":
            return NO_META
        return cls(kept, tenant, priority)


NO_META = RequestMeta()

VLLM_PRIORITY: Mapping[Priority, int] = {"high": -1, "normal": 0, "low": 1}
"""vLLM's request ``priority`` for each class (lower is scheduled earlier): what an LLM
server whose engine runs ``scheduling_policy: priority`` sets from ``RequestMeta.priority``."""


class ItemStream(Protocol):
    """A call in flight: an async iterator of ``Item``s that can be cancelled.

    Serve's ``DeploymentResponseGenerator`` is one; ``clients.LocalStream`` is the
    in-process one. Cancelling closes the server's generator, which aborts the
    engine request and frees its KV cache.
    """

    def __aiter__(self) -> AsyncIterator[Item]: ...

    async def __anext__(self) -> Item: ...

    def cancel(self) -> None: ...


class StreamingServer(Protocol):
    """A server the ingress streams from (LLM server, embedder, reranker, RAG router)."""

    def respond(self, endpoint: Endpoint, body: Body, meta: RequestMeta) -> AsyncIterator[Item]:
        """Answer ``body`` on ``endpoint``: one ``Answer``, or SSE events."""
        ...


class MetricsSource(Protocol):
    """Every deployment behind the ingress, for ``/metrics`` (called by broadcast)."""

    async def metrics_text(self) -> ReplicaMetrics: ...


METRICS_METHOD = "metrics_text"
"""The ``MetricsSource`` method ``/metrics`` broadcasts to every replica."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One retrieval: what a RAG router (or ``/v1/retrieve``) asks a retriever."""

    text: str
    top_k: int
    mode: SearchMode | None = None
    """None: the retriever's default."""
    filters: Mapping[str, Any] | None = None


class Searcher(Protocol):
    """The retriever deployment."""

    async def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        """Hits as plain dicts (``rag.Hit`` fields); raises ``APIError``."""
        ...


class Embedding(Protocol):
    """The embedder deployment's handle method for retrievers (batched)."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text; raises ``APIError`` (400 naming vLLM's limit)."""
        ...


class Scoring(Protocol):
    """The reranker deployment's handle method for RAG routers."""

    async def score(self, body: Body) -> Answer:
        """The ``/v1/rerank`` answer to a rerank request body; raises ``APIError``."""
        ...
