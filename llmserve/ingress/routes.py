"""What the ingress serves: one ``Route`` per id a client can name, built once by the builder.

The builder (``builder/app.py``, ``builder/rag.py``) decides everything about
an id here: which deployment answers it (or that it runs in the ingress's own
process), which endpoints it answers, its timeout and admission limits, its
per-request cost caps, whether its streams resume, its LoRA base and its
``/v1/models`` card. The ingress only looks ``routes[id]`` up and checks the
endpoint and the caps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from llmserve.ingress.caps import NO_CAPS, Caps
from llmserve.servers.protocol import Endpoint


class Local(enum.StrEnum):
    """What runs inside the ingress replica instead of behind a handle."""

    FUSED_MODEL = "fused-model"
    """The ingress's fused model: its vLLM engine runs in the ingress replica."""
    PIPELINE = "pipeline"
    """A RAG pipeline whose generator is the fused model: its router runs here too."""


@dataclass(frozen=True)
class Route:
    """One served id: a model, a LoRA adapter, an embedder, a reranker or a pipeline."""

    id: str
    endpoints: frozenset[Endpoint]
    card: dict[str, Any]
    """Its ``/v1/models`` entry (``id``, ``root``, ``kind``, and ``parent`` for adapters)."""
    handle: Any = None
    """The deployment that answers (a bound deployment in the builder, its
    ``DeploymentHandle`` in the replica); None when it runs in the ingress (``local``)."""
    deployment: str | None = None
    """That deployment's name (``/health`` and ``/v1/models`` ask Serve about it)."""
    local: Local | None = None
    timeout_s: float | None = None
    """End-to-end limit; None: the ingress's ``request_timeout_s``."""
    limits: tuple[int, int] | None = None
    """``(max_ongoing, max_queued)`` of its admission gate in the ingress: only for what
    runs in the ingress's process (Serve bounds every handle call itself)."""
    resumable: bool = False
    """Continue a stream on another replica when its replica dies (``resume.py``)."""
    base: str | None = None
    """A LoRA adapter's base model, whose engine, gate, timeout and caps it shares."""
    caps: Caps = NO_CAPS
    """Its per-request cost caps, checked before admission (``caps.py``)."""

    @property
    def gate_key(self) -> str:
        """The id whose admission gate this route takes: its base model's for an adapter."""
        return self.base or self.id


@dataclass(frozen=True)
class LocalPipeline:
    """How to build a RAG router that runs in the ingress (``Local.PIPELINE``).

    Its router calls the fused engine in-process, so a pipeline request never
    waits on an ingress request slot (no cycle in the call graph). Retriever
    and reranker stay deployments.
    """

    config: Any
    """The pipeline's ``PipelineConfig``."""
    tokenizer_path: str
    retriever: Any
    reranker: Any | None
    base_url: str | None = None
    """The retriever's ``corpus.base_url``, which citations link to."""


@dataclass
class RouteTable:
    """Everything the builder hands the ingress: the routes and what they need."""

    routes: dict[str, Route] = field(default_factory=dict)
    """By served id, in config order (``/v1/models`` lists them so)."""
    pipelines: dict[str, LocalPipeline] = field(default_factory=dict)
    """The ``Local.PIPELINE`` routes' routers, by pipeline id."""
    metrics_sources: list[Any] = field(default_factory=list)
    """Handles of the deployments whose replicas ``/metrics`` asks."""
    backends: list[str] = field(default_factory=list)
    """Deployments that serve no id of their own (retrievers)."""
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The request router of each deployment that has its own, by deployment name.
    Unused at run time (Serve builds the routers): it is here so that a changed
    router changes the ingress's version, which restarts it, because a handle
    builds its router once."""

    def add(self, route: Route) -> None:
        if route.id in self.routes:  # the config's validation rules this out
            raise ValueError(f"two routes for '{route.id}'")
        self.routes[route.id] = route

    @property
    def deployments(self) -> list[str]:
        """Deployment names behind the ingress; ``/health`` needs a running replica of each."""
        names = [d for r in self.routes.values() if (d := r.deployment) is not None]
        return list(dict.fromkeys([*names, *self.backends]))

    def serving(self, endpoint: Endpoint) -> dict[str, Route]:
        """The routes that answer ``endpoint``."""
        return {id_: r for id_, r in self.routes.items() if endpoint in r.endpoints}
