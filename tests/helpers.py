"""Helpers for tests that run a real llmserve app (real Ray Serve + vLLM-CPU)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import psutil

from llmserve.config import AppConfig


def free_port() -> int:
    """A port for an app under test (see ``pick_port`` for why not port 0's)."""
    from llmserve.runtime.ports import pick_port

    return pick_port()


def stop_leftovers(processes: Iterable[psutil.Process], what: str, wait_s: float = 15.0) -> None:
    """Wait up to ``wait_s`` for ``processes`` to end, then kill the rest and warn.

    An app's process that outlives its test (an ingress replica on a direct-ingress
    port, an HAProxy, an engine) can answer the next test's requests; one CI run saw
    the tiny app's port answer with the default app's models. ``tests/faults`` checks
    that none is left; this keeps one leak from failing unrelated tests.
    """
    alive = [p for p in processes if p.is_running()]
    _, alive = psutil.wait_procs(alive, timeout=wait_s)
    if not alive:
        return
    names = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.pid} {proc.name()}")
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    warnings.warn(f"{what} left {len(names)} processes; killed: {', '.join(names)}", stacklevel=2)


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every live descendant of ``pid`` (default: this process)."""
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def in_session(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (a ``start_new_session`` child and what it started)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(proc.pid) == sid:
                found.append(proc)
    return found


@contextlib.contextmanager
def running_app(config: AppConfig, num_cpus: float = 2) -> Iterator[str]:
    """Deploy ``config`` on an embedded Ray in this process; yield the base URL.

    ``connect`` puts Serve's settings (HAProxy mode, its stats port) into this
    process's environment for Ray to pass on; they are restored afterwards, so a later
    test's Ray does not start with this app's ports.
    """
    import ray
    from ray import serve

    from llmserve.models import prepare_models
    from llmserve.runtime.ray import connect, local_ray_options
    from llmserve.runtime.serve import deploy

    saved_env = dict(os.environ)
    older = {p.pid for p in descendants()}
    prepare_models(config)
    connect(None, **{**local_ray_options(config), "num_cpus": num_cpus})
    started = time.monotonic()
    try:
        deploy(config, timeout_s=600)
        yield f"http://{config.ingress.host}:{config.ingress.port}"
    finally:
        ours = [p for p in descendants() if p.pid not in older]
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            os.environ.clear()
            os.environ.update(saved_env)
            stop_leftovers(ours, f"the app started {time.monotonic() - started:.0f} s ago")


def curl_sse(url: str, body: dict, api_key: str | None = None, timeout: float = 120) -> list[str]:
    """POST ``body`` with ``curl -N`` in a subprocess; return the SSE ``data:`` payloads."""
    import json
    import subprocess

    headers = ["-H", "Content-Type: application/json"]
    if api_key:
        headers += ["-H", f"Authorization: Bearer {api_key}"]
    out = subprocess.run(
        ["curl", "-sN", url, *headers, "-d", json.dumps(body)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    return [line[len("data: ") :] for line in out.splitlines() if line.startswith("data: ")]


def index_through_handle(config: AppConfig, retriever_id: str) -> int:
    """Index a retriever's corpus with the running app's embedder deployment; chunks written."""
    import asyncio

    from ray import serve
    from transformers import AutoTokenizer

    from llmserve.builder.app import APP_NAME
    from llmserve.builder.options import deployment_name
    from llmserve.models import resolve_source
    from llmserve.rag import ChunkStore, build_index

    retriever = config.get_retriever(retriever_id)
    embedder = config.get_embedder(retriever.embedder)
    handle = serve.get_deployment_handle(
        deployment_name("embedder", embedder.id), app_name=APP_NAME
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(embedder.source))

    async def embed(texts):
        return await handle.embed.remote(texts)

    report = asyncio.run(
        build_index(
            retriever.corpus.paths,
            ChunkStore(retriever.uri, retriever.table),
            embed,
            tokenizer,
            chunk_tokens=retriever.corpus.chunk_tokens,
            chunk_overlap_tokens=retriever.corpus.chunk_overlap_tokens,
            progress=False,
            batch_size=16,
            max_file_bytes=retriever.corpus.max_file_bytes,
        )
    )
    return report.chunks_written


def vllm_counters(metrics_text: str, model: str) -> dict[str, float]:
    """One model's vLLM engine counters from /metrics: requests running, requests
    finished by the engine (any reason), and tokens generated."""
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "vllm:num_requests_running": "running",
        "vllm:request_success_total": "finished",
        "vllm:generation_tokens_total": "generated",
    }
    out = dict.fromkeys(names.values(), 0.0)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.labels.get("model_name") == model and sample.name in names:
                out[names[sample.name]] += sample.value
    return out


@contextlib.contextmanager
def simulated_cluster(gpus_per_node: list[int]) -> Iterator[str]:
    """A local multi-node Ray cluster: a CPU-only head plus one node per entry, whose GPUs
    are logical resources only; this process is connected as its driver. Yields the address."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
    )
    try:
        for gpus in gpus_per_node:
            cluster.add_node(num_cpus=1, num_gpus=gpus)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (registered in ``sys.modules``), its sibling
    scripts importable as ``python scripts/NAME.py`` sees them."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
