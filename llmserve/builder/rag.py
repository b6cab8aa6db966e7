"""RAG deployments: embedders, rerankers, retrievers and pipeline routers.

Each stage is its own Serve deployment with its own replica settings; the
router composes them through handles. A pipeline whose generator is the
ingress's fused model gets no router deployment: its router runs inside the
ingress (``LocalPipeline``), so generation never re-enters the ingress.
"""

from __future__ import annotations

from pathlib import Path

from ray import serve
from ray.serve import Application

from llmserve.builder import versions
from llmserve.builder.cards import card
from llmserve.builder.options import deployment_name, engine_deployment_options
from llmserve.config import AppConfig, EmbedderConfig, RerankerConfig
from llmserve.ingress.caps import Caps
from llmserve.ingress.routes import Local, LocalPipeline, Route, RouteTable
from llmserve.models import resolve_source
from llmserve.rag import index_hint
from llmserve.servers.embedder import Embedder
from llmserve.servers.protocol import (
    EMBEDDING_ENDPOINTS,
    PIPELINE_ENDPOINTS,
    RERANK_ENDPOINTS,
    Endpoint,
)
from llmserve.servers.rag.router import RAGRouter
from llmserve.servers.reranker import Reranker
from llmserve.servers.retriever import Retriever


def add_rag_deployments(config: AppConfig, routes: RouteTable, home: str) -> None:
    retry_after = config.ingress.retry_after_s
    embedders = {
        cfg.id: _bind_engine(config, cfg, Embedder, "embedder", EMBEDDING_ENDPOINTS, routes, home)
        for cfg in config.embedders
    }
    rerankers = {
        cfg.id: _bind_engine(config, cfg, Reranker, "reranker", RERANK_ENDPOINTS, routes, home)
        for cfg in config.rerankers
    }

    pipelines_of: dict[str, str] = {}
    for p in config.pipelines:
        pipelines_of.setdefault(p.retriever, p.id)

    retrievers = {}
    for cfg in config.retrievers:
        name = deployment_name("retriever", cfg.id)
        dep = serve.deployment(Retriever).options(
            name=name, **cfg.deployment.to_serve_options(retry_after)
        )
        hint = index_hint(pipelines_of.get(cfg.id, "NAME"))
        retrievers[cfg.id] = versions.bind(dep, cfg, embedders[cfg.embedder], hint)
        routes.backends.append(name)

    for p in config.pipelines:
        generator = config.get_model(p.generator).source
        tokenizer = resolve_source(generator, Path(home), prepare=False)
        reranker = rerankers[p.reranker] if p.reranker else None
        # Its root is its generator's id, not a source.
        pipeline_card = {"id": p.id, "root": p.generator, "kind": "rag-pipeline"}
        base_url = config.get_retriever(p.retriever).corpus.base_url
        caps = Caps.for_pipeline(p, config.get_model(p.generator).limits)
        if p.generator == config.ingress.fused_model:
            routes.pipelines[p.id] = LocalPipeline(
                p, tokenizer, retrievers[p.retriever], reranker, base_url
            )
            routes.add(
                Route(
                    p.id,
                    PIPELINE_ENDPOINTS,
                    pipeline_card,
                    local=Local.PIPELINE,
                    timeout_s=p.request_timeout_s,
                    limits=p.deployment.limits(),
                    caps=caps,
                )
            )
            continue
        name = deployment_name("rag", p.id)
        dep = serve.deployment(RAGRouter).options(
            name=name, **p.deployment.to_serve_options(retry_after)
        )
        generator_route = routes.routes[p.generator]
        # The generator's request router is in this router's version: its handle
        # builds that router once, so a changed one takes effect by a restart.
        router = versions.bind(
            dep,
            p,
            tokenizer,
            retrievers[p.retriever],
            reranker,
            generator_route.handle,
            base_url,
            version_extra=routes.routers.get(generator_route.deployment or ""),
        )
        routes.add(
            Route(
                p.id,
                PIPELINE_ENDPOINTS,
                pipeline_card,
                handle=router,
                deployment=name,
                timeout_s=p.request_timeout_s,
                caps=caps,
            )
        )
        routes.metrics_sources.append(router)


def _bind_engine(
    config: AppConfig,
    cfg: EmbedderConfig | RerankerConfig,
    cls: type,
    kind: str,
    endpoints: frozenset[Endpoint],
    routes: RouteTable,
    home: str,
) -> Application:
    """One deployment per vLLM pooling engine, listed in /v1/models and /metrics."""
    name = deployment_name(kind, cfg.id)
    options = engine_deployment_options(cfg, config.ingress.retry_after_s)
    bound = versions.bind(serve.deployment(cls).options(name=name, **options), cfg, home)
    caps = (
        Caps.for_embedder(cfg.limits)
        if isinstance(cfg, EmbedderConfig)
        else Caps.for_reranker(cfg.limits)
    )
    routes.add(
        Route(
            cfg.id,
            endpoints,
            card(cfg.id, cfg.source, kind),
            handle=bound,
            deployment=name,
            caps=caps,
        )
    )
    routes.metrics_sources.append(bound)
    return bound
