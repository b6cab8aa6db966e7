"""Indexing a config's retrievers: ``llmserve index``, and the missing indexes before ``run``.

Indexing embeds chunks with the retriever's embedder. It runs the same vLLM
pooling engine in this process (no Ray), so it works offline. Not exported
by ``llmserve.rag``: it needs the config models and a vLLM engine, which the
plain RAG modules do not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llmserve.config import AppConfig, RetrieverConfig
from llmserve.engine.pooling import embed_texts
from llmserve.models import prepare_models, resolve_source
from llmserve.rag.indexer import build_index
from llmserve.rag.store import ChunkStore


def ensure_indexes(config: AppConfig) -> None:
    """Build the indexes that do not exist yet (``make run`` on a fresh clone)."""
    missing = [r.id for r in config.retrievers if not _store(r).exists()]
    if missing:
        print(f"building missing RAG indexes: {', '.join(missing)}", flush=True)
        for report in asyncio.run(index_retrievers(config, missing)):
            print(report, flush=True)


async def index_retrievers(config: AppConfig, retriever_ids: Sequence[str]) -> list[str]:
    """Build or refresh the retrievers' indexes, one embedder engine at a time;
    returns one ``id: summary`` line per retriever."""
    from transformers import AutoTokenizer

    from llmserve.engine.serving import start_engine

    prepare_models(config)
    home = config.home_dir()
    reports = []
    by_embedder: dict[str, list[RetrieverConfig]] = {}
    for rid in retriever_ids:
        retriever = config.get_retriever(rid)
        by_embedder.setdefault(retriever.embedder, []).append(retriever)
    for embedder_id, retrievers in by_embedder.items():
        embedder = config.get_embedder(embedder_id)
        bundle = await start_engine(embedder, home, runner="pooling")
        try:
            serving = bundle.serving.embedding

            async def embed(texts, serving=serving, model_id=embedder.id):
                return await embed_texts(serving, model_id, texts)

            tokenizer = AutoTokenizer.from_pretrained(resolve_source(embedder.source, home))
            for retriever in retrievers:
                report = await build_index(
                    retriever.corpus.paths,
                    _store(retriever),
                    embed,
                    tokenizer,
                    chunk_tokens=retriever.corpus.chunk_tokens,
                    chunk_overlap_tokens=retriever.corpus.chunk_overlap_tokens,
                    metadata_fields=retriever.corpus.metadata_fields,
                    embedder_id=embedder.source,
                    max_file_bytes=retriever.corpus.max_file_bytes,
                )
                reports.append(f"{retriever.id}: {report.summary()}")
        finally:
            bundle.engine.shutdown()
    return reports


def _store(retriever: RetrieverConfig) -> ChunkStore:
    return ChunkStore(
        retriever.uri, retriever.table, metadata_fields=retriever.corpus.metadata_fields
    )
