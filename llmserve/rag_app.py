"""RAG deployments: embedders, rerankers, retrievers and pipeline routers.

Each stage is its own Serve deployment with its own replica settings; the
router composes them through handles.
"""

from __future__ import annotations

from ray import serve

from llmserve.config import AppConfig
from llmserve.deployments.embedder import Embedder
from llmserve.deployments.ingress import Routes
from llmserve.deployments.options import deployment_name, engine_deployment_options
from llmserve.deployments.rag_router import RAGRouter
from llmserve.deployments.reranker import Reranker
from llmserve.deployments.retriever import Retriever
from llmserve.models import resolve_source


def index_hint(pipeline_id: str) -> str:
    return f"Build it with: llmserve index CONFIG --pipeline {pipeline_id}"


def add_rag_deployments(config: AppConfig, routes: Routes, home: str) -> None:
    embedders = _bind_engines(
        config.embedders, Embedder, "embedder", routes.embeddings, routes, home
    )
    rerankers = _bind_engines(config.rerankers, Reranker, "reranker", routes.rerank, routes, home)

    pipelines_of = {}
    for p in config.pipelines:
        pipelines_of.setdefault(p.retriever, p.id)

    retrievers = {}
    for cfg in config.retrievers:
        dep = serve.deployment(Retriever).options(
            name=deployment_name("retriever", cfg.id), **cfg.deployment.to_serve_options()
        )
        hint = index_hint(pipelines_of.get(cfg.id, "NAME"))
        retrievers[cfg.id] = dep.bind(cfg, embedders[cfg.embedder], hint)

    for p in config.pipelines:
        generator = routes.chat[p.generator]
        tokenizer = resolve_source(config.get_model(p.generator).source, home, prepare=False)
        dep = serve.deployment(RAGRouter).options(
            name=deployment_name("rag", p.id), **p.deployment.to_serve_options()
        )
        reranker = rerankers[p.reranker] if p.reranker else None
        router = dep.bind(p, tokenizer, retrievers[p.retriever], reranker, generator)
        routes.chat[p.id] = router
        routes.retrieve[p.id] = router
        routes.model_cards.append({"id": p.id, "root": p.generator, "kind": "rag-pipeline"})
        routes.metrics_sources.append(router)


def _bind_engines(configs, cls, kind: str, route: dict, routes: Routes, home: str) -> dict:
    """One deployment per vLLM pooling engine, listed in /v1/models and /metrics."""
    bound = {}
    for cfg in configs:
        dep = serve.deployment(cls).options(
            name=deployment_name(kind, cfg.id), **engine_deployment_options(cfg)
        )
        bound[cfg.id] = route[cfg.id] = dep.bind(cfg, home)
        routes.model_cards.append({"id": cfg.id, "root": cfg.source, "kind": kind})
        routes.metrics_sources.append(bound[cfg.id])
    return bound
