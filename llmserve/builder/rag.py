"""RAG deployments: embedders, rerankers, retrievers and pipeline routers.

Each stage is its own Serve deployment with its own replica settings; the
router composes them through handles. A pipeline whose generator is the
ingress's fused model gets no router deployment: its router runs inside the
ingress (``LocalPipeline``), so generation never re-enters the ingress.
"""

from __future__ import annotations

from ray import serve

from llmserve.builder import versions
from llmserve.builder.options import deployment_name, engine_deployment_options
from llmserve.config import AppConfig
from llmserve.ingress.deployment import LocalPipeline, Routes
from llmserve.models import resolve_source
from llmserve.servers.embedder import Embedder
from llmserve.servers.rag.router import RAGRouter
from llmserve.servers.reranker import Reranker
from llmserve.servers.retriever import Retriever


def index_hint(pipeline_id: str) -> str:
    return f"Build it with: llmserve index CONFIG --pipeline {pipeline_id}"


def add_rag_deployments(config: AppConfig, routes: Routes, home: str) -> None:
    retry_after = config.ingress.retry_after_s
    embedders = _bind_engines(
        config, config.embedders, Embedder, "embedder", routes.embeddings, routes
    )
    rerankers = _bind_engines(config, config.rerankers, Reranker, "reranker", routes.rerank, routes)

    pipelines_of = {}
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
        routes.deployments.append(name)

    for p in config.pipelines:
        tokenizer = resolve_source(config.get_model(p.generator).source, home, prepare=False)
        reranker = rerankers[p.reranker] if p.reranker else None
        routes.model_cards.append({"id": p.id, "root": p.generator, "kind": "rag-pipeline"})
        if p.request_timeout_s is not None:
            routes.timeouts[p.id] = p.request_timeout_s
        if p.generator == config.ingress.fused_model:
            routes.local_pipelines.append(
                LocalPipeline(p, tokenizer, retrievers[p.retriever], reranker)
            )
            routes.limits[p.id] = p.deployment.limits()
            continue
        name = deployment_name("rag", p.id)
        dep = serve.deployment(RAGRouter).options(
            name=name, **p.deployment.to_serve_options(retry_after)
        )
        router = versions.bind(
            dep, p, tokenizer, retrievers[p.retriever], reranker, routes.chat[p.generator]
        )
        routes.chat[p.id] = router
        routes.responses[p.id] = router
        routes.retrieve[p.id] = router
        routes.metrics_sources.append(router)
        routes.deployments.append(name)


def _bind_engines(config: AppConfig, configs, cls, kind: str, route: dict, routes: Routes) -> dict:
    """One deployment per vLLM pooling engine, listed in /v1/models and /metrics."""
    home, retry_after = str(config.home_dir()), config.ingress.retry_after_s
    bound = {}
    for cfg in configs:
        name = deployment_name(kind, cfg.id)
        dep = serve.deployment(cls).options(
            name=name, **engine_deployment_options(cfg, retry_after)
        )
        bound[cfg.id] = route[cfg.id] = versions.bind(dep, cfg, home)
        routes.model_cards.append({"id": cfg.id, "root": cfg.source, "kind": kind})
        routes.metrics_sources.append(bound[cfg.id])
        routes.deployments.append(name)
    return bound
