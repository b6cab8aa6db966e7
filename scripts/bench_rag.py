#!/usr/bin/env python
"""Latency of each RAG stage (retrieve, rerank, generation) on a ~1,000-chunk corpus.

Builds the corpus with ``make_bench_corpus.py``, indexes it, starts llmserve
in this process (SmolLM2-135M fused into the ingress, all-MiniLM-L6-v2 as
embedder and reranker), then sends RAG chat requests one after the other and
reads the stage timings each answer carries in ``rag.timings_ms``. It also
times ``POST /v1/retrieve`` alone in each search mode. Prints p50/p99/mean per
stage as Markdown tables.

Usage::

    .venv/bin/python scripts/bench_rag.py --requests 50
    .venv/bin/python scripts/bench_rag.py --no-reranker --json-out rag.json

See scripts/README.md for what the stages mean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai

REPO = Path(__file__).resolve().parent.parent
PIPELINE = "rag-bench"
RETRIEVER = "bench"
MODES = ("hybrid", "dense", "bm25")
STAGES = ["retrieve", "rerank", "generate_first_token", "client_first_chunk", "end_to_end"]
ENGINE = {"dtype": "float32", "enforce_eager": True}
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50, help="measured requests per kind (50)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight (1)")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured requests per kind (3)")
    p.add_argument("--max-tokens", type=int, default=16, help="max_tokens per answer (16)")
    p.add_argument("--chunks", type=int, default=1000, help="target corpus size (1000)")
    p.add_argument("--stream", action="store_true", help="stream answers; adds client TTFT")
    p.add_argument("--no-reranker", action="store_true", help="pipeline without a reranker")
    p.add_argument("--workdir", type=Path, help="corpus + index folder, reused if it exists")
    p.add_argument("--json-out", type=Path, help="write settings and raw timings here")
    return p.parse_args(argv)


def make_corpus(workdir: Path, chunks: int) -> list[str]:
    """Write ``workdir/corpus`` and ``workdir/queries.jsonl`` (unless present); return queries."""
    queries = workdir / "queries.jsonl"
    if not queries.exists():
        script = REPO / "scripts" / "make_bench_corpus.py"
        cmd = [sys.executable, str(script), str(workdir), "--chunks", str(chunks)]
        subprocess.run(cmd, check=True)
    with open(queries, encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in handle if line.strip()]


def make_config(workdir: Path, reranker: bool):
    """Like configs/default.yaml, but over the bench corpus, on a free port."""
    from llmserve.config import validate_config_dict
    from llmserve.runtime.ports import pick_port

    minilm = {"source": "builtin:all-minilm-l6-v2", "device": "cpu", "engine_kwargs": ENGINE}
    pipeline = {"id": PIPELINE, "retriever": RETRIEVER, "generator": "smollm2"}
    data: dict[str, Any] = {
        "ingress": {"host": "127.0.0.1", "port": pick_port(), "fused_model": "smollm2"},
        "models": [
            {
                "id": "smollm2",
                "source": "builtin:smollm2-135m-instruct",
                "device": "cpu",
                "engine_kwargs": {**ENGINE, "max_model_len": 4096},
                "env_vars": ENV,
            }
        ],
        "embedders": [{"id": "minilm", **minilm, "env_vars": ENV}],
        "retrievers": [
            {
                "id": RETRIEVER,
                "embedder": "minilm",
                "uri": str(workdir / "index"),
                "corpus": {"paths": [str(workdir / "corpus")]},
            }
        ],
        "pipelines": [pipeline],
    }
    if reranker:
        data["rerankers"] = [
            {"id": "minilm-rerank", "kind": "embedding", **minilm, "env_vars": ENV}
        ]
        pipeline["reranker"] = "minilm-rerank"
    return validate_config_dict(data)


def build_index(config) -> int:
    """Index the corpus (unchanged files are skipped); return the chunk count."""
    from llmserve.rag import ChunkStore
    from llmserve.rag.index_job import index_retrievers

    for report in asyncio.run(index_retrievers(config, [RETRIEVER])):
        print(report, flush=True)
    retriever = config.get_retriever(RETRIEVER)
    chunks = ChunkStore(retriever.uri, retriever.table).count()
    print(f"index holds {chunks} chunks", flush=True)
    if not 800 <= chunks <= 1300:
        print(f"warning: expected roughly 1,000 chunks, got {chunks}", flush=True)
    return chunks


def run_all(fn: Callable[[str], dict], queries: list[str], concurrency: int) -> list[dict]:
    """Call ``fn`` on each query, ``concurrency`` at a time; results in query order."""
    if concurrency <= 1:
        return [fn(q) for q in queries]
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(fn, queries))


def rag_chat(client: openai.OpenAI, max_tokens: int, stream: bool) -> Callable[[str], dict]:
    """A function sending one RAG chat request; returns stage timings in ms."""

    def send(query: str) -> dict:
        kwargs = {
            "model": PIPELINE,
            "messages": [{"role": "user", "content": query}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        started = time.perf_counter()
        if not stream:
            answer = client.chat.completions.create(**kwargs)
            timings = dict(answer.model_extra["rag"]["timings_ms"])
        else:
            chunks = client.chat.completions.create(**kwargs, stream=True)
            first = next(chunks)
            timings = dict(first.model_extra["rag"]["timings_ms"])
            timings["client_first_chunk"] = (time.perf_counter() - started) * 1000
            for _ in chunks:
                pass
        timings["end_to_end"] = (time.perf_counter() - started) * 1000
        return timings

    return send


def retrieve(http: httpx.Client, mode: str) -> Callable[[str], dict]:
    """A function sending one ``POST /v1/retrieve`` request; returns its latency in ms."""

    def send(query: str) -> dict:
        started = time.perf_counter()
        response = http.post(
            "/v1/retrieve", json={"pipeline": PIPELINE, "query": query, "mode": mode}
        )
        response.raise_for_status()
        if not response.json()["data"]:
            raise RuntimeError(f"/v1/retrieve found nothing for {query!r} ({mode})")
        return {mode: (time.perf_counter() - started) * 1000}

    return send


def table(title: str, samples: dict[str, list[float]]) -> str:
    """A Markdown table of n / p50 / p99 / mean per row of samples."""
    lines = [f"| {title} | n | p50 ms | p99 ms | mean ms |", "|---|---:|---:|---:|---:|"]
    for name, values in samples.items():
        if values:
            v = np.asarray(values)
            p50, p99 = np.percentile(v, [50, 99])
            lines.append(f"| {name} | {len(v)} | {p50:.1f} | {p99:.1f} | {v.mean():.1f} |")
    return "\n".join(lines)


def collect(results: list[dict], keys: list[str]) -> dict[str, list[float]]:
    """Per key, the values present in the results (a stage may be absent)."""
    return {k: [r[k] for r in results if k in r] for k in keys}


def measure(url: str, queries: list[str], args: argparse.Namespace) -> dict[str, list[float]]:
    """Warm up, then time RAG chats and /v1/retrieve per mode; raw samples in ms."""
    pick = [queries[i % len(queries)] for i in range(args.warmup + args.requests)]
    warm, measured = pick[: args.warmup], pick[args.warmup :]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    chat = rag_chat(client, args.max_tokens, args.stream)
    run_all(chat, warm, 1)
    samples = collect(run_all(chat, measured, args.concurrency), STAGES)
    with httpx.Client(base_url=url, timeout=300) as http:
        for mode in MODES:
            run_all(retrieve(http, mode), warm, 1)
            timed = run_all(retrieve(http, mode), measured, args.concurrency)
            samples[f"retrieve_{mode}"] = [r[mode] for r in timed]
    return samples


def serve_and_measure(config, queries: list[str], args: argparse.Namespace) -> dict:
    """Start llmserve in this process, measure, and always shut Serve and Ray down."""
    import ray
    from ray import serve

    from llmserve.models import prepare_models
    from llmserve.runtime.ray import connect, local_ray_options
    from llmserve.runtime.serve import deploy

    prepare_models(config)
    connect(None, **{**local_ray_options(config), "num_cpus": 2})
    try:
        started = time.perf_counter()
        deploy(config, timeout_s=900)
        print(f"app healthy after {time.perf_counter() - started:.0f}s", flush=True)
        return measure(f"http://127.0.0.1:{config.ingress.port}", queries, args)
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        queries = make_corpus(workdir, args.chunks)
        config = make_config(workdir, reranker=not args.no_reranker)
        chunks = build_index(config)
        samples = serve_and_measure(config, queries, args)

    report = "\n\n".join(
        [
            f"RAG chat, {chunks} chunks, concurrency {args.concurrency}, "
            f"max_tokens {args.max_tokens}, {'streaming' if args.stream else 'non-streaming'}:",
            table("stage", {k: samples[k] for k in STAGES}),
            "POST /v1/retrieve (client-side latency):",
            table("mode", {m: samples[f"retrieve_{m}"] for m in MODES}),
        ]
    )
    print("\n" + report)
    if args.json_out:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        out = {"settings": settings, "chunks": chunks, "samples_ms": samples, "report": report}
        args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
