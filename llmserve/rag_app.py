"""RAG deployments: embedders, rerankers, retrievers and pipeline routers.

Each stage is its own Serve deployment with its own replica settings; the
router composes them through handles.
"""

from __future__ import annotations

from ray import serve

from llmserve.config import AppConfig
from llmserve.deployments.embedder import Embedder
from llmserve.deployments.ingress import Routes
from llmserve.deployments.rag_router import RAGRouter
from llmserve.deployments.reranker import Reranker
from llmserve.deployments.retriever import Retriever
from llmserve.models import resolve_source


def index_hint(pipeline_id: str) -> str:
    return f"Build it with: llmserve index CONFIG --pipeline {pipeline_id}"


def add_rag_deployments(config: AppConfig, routes: Routes, home: str) -> None:
    from llmserve.app import deployment_name, engine_deployment_options

    embedders = {}
    for cfg in config.embedders:
        dep = serve.deployment(Embedder).options(
            name=deployment_name("embedder", cfg.id), **engine_deployment_options(cfg)
        )
        embedders[cfg.id] = dep.bind(cfg, home)
        routes.embeddings[cfg.id] = embedders[cfg.id]
        routes.model_cards.append({"id": cfg.id, "root": cfg.source, "kind": "embedder"})
        routes.metrics_sources.append(embedders[cfg.id])

    rerankers = {}
    for cfg in config.rerankers:
        dep = serve.deployment(Reranker).options(
            name=deployment_name("reranker", cfg.id), **engine_deployment_options(cfg)
        )
        rerankers[cfg.id] = dep.bind(cfg, home)
        routes.rerank[cfg.id] = rerankers[cfg.id]
        routes.model_cards.append({"id": cfg.id, "root": cfg.source, "kind": "reranker"})

    pipelines_of = {}
    for p in config.pipelines:
        pipelines_of.setdefault(p.retriever, p.id)

    retrievers = {}
    for cfg in config.retrievers:
        dep = serve.deployment(Retriever).options(
            name=deployment_name("retriever", cfg.id), **_plain_options(cfg.deployment)
        )
        hint = index_hint(pipelines_of.get(cfg.id, "NAME"))
        retrievers[cfg.id] = dep.bind(cfg, embedders[cfg.embedder], hint)

    for p in config.pipelines:
        generator = routes.chat[p.generator]
        tokenizer = resolve_source(config.get_model(p.generator).source, home, prepare=False)
        dep = serve.deployment(RAGRouter).options(
            name=deployment_name("rag", p.id), **_plain_options(p.deployment)
        )
        reranker = rerankers[p.reranker] if p.reranker else None
        router = dep.bind(p, tokenizer, retrievers[p.retriever], reranker, generator)
        routes.chat[p.id] = router
        routes.retrieve[p.id] = router
        routes.model_cards.append({"id": p.id, "root": p.generator, "kind": "rag-pipeline"})
        routes.metrics_sources.append(router)


def _plain_options(deployment) -> dict:
    return deployment.to_serve_options()
