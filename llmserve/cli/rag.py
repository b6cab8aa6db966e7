"""RAG command: ``llmserve index`` (the indexing job is ``llmserve.rag.index_job``)."""

from __future__ import annotations

import asyncio
from pathlib import Path


def add_rag_commands(sub) -> None:
    p = sub.add_parser("index", help="build or refresh RAG indexes (unchanged files are skipped)")
    p.add_argument("config", type=Path, help="YAML config file")
    p.add_argument("--pipeline", help="index only this pipeline's retriever")
    p.set_defaults(func=cmd_index)


def cmd_index(args) -> int:
    from llmserve.config import load_config
    from llmserve.rag.index_job import index_retrievers

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
