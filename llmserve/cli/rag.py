"""RAG commands: ``llmserve index`` and building missing indexes before ``run``.

Indexing embeds chunks with the retriever's embedder. It runs the same
vLLM pooling engine in this process, so it works offline without Ray.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from llmserve.config import AppConfig
from llmserve.engine.pooling import embed_texts
from llmserve.models import resolve_source
from llmserve.rag import ChunkStore, build_index


def add_rag_commands(sub) -> None:
    p = sub.add_parser("index", help="build or refresh RAG indexes (unchanged files are skipped)")
    p.add_argument("config", type=Path, help="YAML config file")
    p.add_argument("--pipeline", help="index only this pipeline's retriever")
    p.set_defaults(func=cmd_index)


def cmd_index(args) -> int:
    from llmserve.config import load_config

    config = load_config(args.config)
    if args.pipeline:
        retriever_ids = [config.get_pipeline(args.pipeline).retriever]
    else:
        retriever_ids = [r.id for r in config.retrievers]
    if not retriever_ids:
        print("nothing to index: the config has no retrievers")
        return 0
    for report in asyncio.run(index_retrievers(config, retriever_ids)):
        print(report)
    return 0


def ensure_indexes(config: AppConfig) -> None:
    """Build the indexes that do not exist yet (``make run`` on a fresh clone)."""
    missing = [r.id for r in config.retrievers if not _store(r).exists()]
    if missing:
        print(f"building missing RAG indexes: {', '.join(missing)}", flush=True)
        for report in asyncio.run(index_retrievers(config, missing)):
            print(report, flush=True)


async def index_retrievers(config: AppConfig, retriever_ids: list[str]) -> list[str]:
    from transformers import AutoTokenizer

    from llmserve.engine.serving import start_engine
    from llmserve.runtime.lifecycle import prepare_models

    prepare_models(config)
    home = config.home_dir()
    reports = []
    by_embedder: dict[str, list] = {}
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


def _store(retriever) -> ChunkStore:
    return ChunkStore(
        retriever.uri, retriever.table, metadata_fields=retriever.corpus.metadata_fields
    )
