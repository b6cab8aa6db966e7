"""``llmserve eval`` against the default app, through its OpenAI API: a bounded run
(one question and one follow-up, two query modes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ITEMS = [
    {
        "id": "kv-cache",
        "question": "Which environment variable sets the size of the KV cache on CPU?",
        "source": "cpu.md",
        "answer": "VLLM_CPU_KVCACHE_SPACE",
    },
    {
        "id": "tiny-layers",
        "history": [
            {"role": "user", "content": "What is the tiny-llama built-in model?"},
            {"role": "assistant", "content": "A tiny, randomly initialized Llama model."},
        ],
        "question": "How many layers does it have?",
        "source": "docs/builtin-models.md",
        "answer": ["4 layers", "four layers"],
    },
]


def _eval(default_app: str, *args: str) -> subprocess.CompletedProcess[str]:
    llmserve = Path(sys.executable).parent / "llmserve"
    command = [str(llmserve), "eval", "rag-docs", "--base-url", f"{default_app}/v1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_eval_reports_each_query_mode_of_the_follow_ups(default_app: str, tmp_path) -> None:
    questions = tmp_path / "set.jsonl"
    questions.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    run = _eval(
        default_app,
        "--questions",
        str(questions),
        "--query-modes",
        "last,history",
        "--max-tokens",
        "32",
        "--json",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    rows = {(r["retrieval"], r["query"]): r for r in report["rows"]}
    assert list(rows) == [("default", "single"), ("default", "last"), ("default", "history")]
    assert all(r["asked"] == 1 and r["errors"] == 0 and r["k"] == 4 for r in rows.values())
    assert rows[("default", "single")]["recall"] == 1.0  # cpu.md holds the answer
    # the follow-up's own words miss its document; with its history they find it
    assert rows[("default", "last")]["recall"] == 0.0
    assert rows[("default", "history")]["recall"] == 1.0
    assert all(0 < r["ttft_p50_s"] <= r["total_p50_s"] for r in rows.values())
    searched = [r["searched"] for r in report["replies"]]
    # the single question goes with the pipeline's default (history: no turns, so its words)
    assert [s.get("mode") for s in searched] == ["history", "last", "history"]
    assert searched[0]["text"] == ITEMS[0]["question"]


def test_eval_prints_a_table(default_app: str) -> None:
    run = _eval(default_app, "--limit", "1", "--max-tokens", "8")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].startswith("rag-docs at ") and "1 questions, 0 follow-ups" in lines[0]
    assert lines[2].startswith("| retrieval | query  | asked | errors | recall@4 |")
    assert lines[4].startswith("| default   | single | 1     | 0      |")


def test_eval_of_a_missing_pipeline_is_a_clear_error(default_app: str) -> None:
    llmserve = Path(sys.executable).parent / "llmserve"
    command = [str(llmserve), "eval", "nope", "--base-url", f"{default_app}/v1", "--limit", "1"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    # the server's 404 (model_not_found), as the SDK reports it, without a traceback
    assert "The model 'nope' does not exist" in run.stderr and "Traceback" not in run.stderr
