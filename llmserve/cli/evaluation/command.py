"""``llmserve eval PIPELINE``: ask an eval set, print recall, grounding, citations, latency.

Questions without history are asked once per retrieval mode (row ``single``);
follow-ups once per retrieval mode and query mode, so that the rows compare
how each query mode finds a follow-up's source. One question at a time, so
the latencies are those of an idle server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from llmserve.literals import QUERY_MODES, SEARCH_MODES

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def add_eval_command(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="measure a RAG pipeline of a running server: recall, grounding, citations, latency",
    )
    p.add_argument("pipeline", help="the pipeline's model name, e.g. rag-docs")
    p.add_argument(
        "--questions",
        type=Path,
        help="eval set, JSON Lines (docs/rag.md has the format); default: the shipped set "
        "over llmserve's docs/, for configs/default.yaml's rag-docs",
    )
    p.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL),
        help=f"the server's OpenAI API URL (default: $OPENAI_BASE_URL or {DEFAULT_BASE_URL})",
    )
    p.add_argument("--api-key", help="bearer key (default: $LLMSERVE_API_KEY, $OPENAI_API_KEY)")
    p.add_argument(
        "--modes",
        type=_modes(("default", *SEARCH_MODES)),
        default=["default"],
        help="retrieval modes, comma-separated: default (the pipeline's own), "
        + ", ".join(SEARCH_MODES),
    )
    p.add_argument(
        "--query-modes",
        type=_modes(QUERY_MODES),
        default=list(QUERY_MODES),
        help="query modes for follow-ups, comma-separated (default: all: "
        + ", ".join(QUERY_MODES)
        + ")",
    )
    p.add_argument("--max-tokens", type=_positive, default=128, help="per answer (128)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0)")
    p.add_argument("--limit", type=_positive, help="ask only the first N questions of the file")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (120)")
    p.add_argument("--json", action="store_true", help="print JSON: rows and every reply")
    p.set_defaults(func=cmd_eval)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _modes(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        modes = [m.strip() for m in text.split(",") if m.strip()]
        unknown = [m for m in modes if m not in allowed]
        if unknown or not modes:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return list(dict.fromkeys(modes))

    return parse


def cmd_eval(args: argparse.Namespace) -> int:
    import openai
    from tqdm import tqdm

    from llmserve.cli.evaluation import client as ask
    from llmserve.cli.evaluation.questions import DEFAULT_SET, load
    from llmserve.cli.evaluation.scoring import Scored, row, score

    path = args.questions or DEFAULT_SET
    items = load(path)[: args.limit]
    singles = [i for i in items if not i.followup]
    followups = [i for i in items if i.followup]
    plan: list[tuple[str, str, Any]] = []  # (retrieval, query row, items)
    for mode in args.modes:
        if singles:
            plan.append((mode, "single", singles))
        if followups:
            plan.extend((mode, query, followups) for query in args.query_modes)
    key = args.api_key or os.environ.get("LLMSERVE_API_KEY") or os.environ.get("OPENAI_API_KEY")
    client = openai.OpenAI(
        base_url=args.base_url, api_key=key or "unused", timeout=args.timeout, max_retries=3
    )
    settings = ask.Settings(args.pipeline, args.max_tokens, args.temperature)
    rows: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []
    total = sum(len(group) for _, _, group in plan)
    with tqdm(total=total, desc=f"eval {args.pipeline}", unit="q", file=sys.stderr) as bar:
        for retrieval, query, group in plan:
            scored: list[Scored] = []
            for item in group:
                sent = None if query == "single" else query
                reply = ask.ask(client, settings, item, retrieval, sent)
                scored.append(score(item, reply, retrieval, query))
                bar.update()
            rows.append(row(retrieval, query, scored))
            replies.extend(s.detail() for s in scored)
    report = {
        "pipeline": args.pipeline,
        "base_url": args.base_url,
        "questions": str(path),
        "single": len(singles),
        "followups": len(followups),
        "rows": rows,
        "replies": replies,
    }
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(table(report))
    return 0


COLUMNS = [
    ("retrieval", "retrieval", "{}"),
    ("query", "query", "{}"),
    ("asked", "asked", "{}"),
    ("errors", "errors", "{}"),
    ("recall", "recall@k", "{:.2f}"),
    ("mrr", "MRR", "{:.2f}"),
    ("grounded", "grounded", "{:.2f}"),
    ("citation_precision", "cite prec", "{:.2f}"),
    ("cited", "cited", "{:.2f}"),
    ("ttft_p50_s", "TTFT p50", "{:.2f} s"),
    ("total_p50_s", "total p50", "{:.2f} s"),
]


def table(report: dict[str, Any]) -> str:
    """The rows as a Markdown table, with a line saying what was asked."""
    rows = report["rows"]
    k = max((r["k"] for r in rows), default=0)
    header = [title.replace("@k", f"@{k}") for _, title, _ in COLUMNS]
    cells = [
        ["-" if r[key] is None else fmt.format(r[key]) for key, _, fmt in COLUMNS] for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = [
        f"{report['pipeline']} at {report['base_url']}: {report['single']} questions, "
        f"{report['followups']} follow-ups ({report['questions']})",
        "",
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    fallbacks = sum(r["fallbacks"] for r in rows)
    if fallbacks:
        lines.append(f"\n{fallbacks} rewrites fell back to history (see --json: searched)")
    return "\n".join(lines)
