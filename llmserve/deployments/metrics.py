"""Prometheus metrics for the ingress, and merging of every deployment's metrics.

Each process keeps its own prometheus-client registry (vLLM registers its
``vllm:*`` engine metrics in the LLM server's). ``/metrics`` asks every
deployment for its exposition text and merges same-named families, so one
scrape shows the whole app.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "llmserve_requests",
    "Requests answered by the ingress, by model, endpoint and HTTP status.",
    ["model", "endpoint", "status"],
)
LATENCY = Histogram(
    "llmserve_request_latency_seconds",
    "Time from request to the last byte of the response.",
    ["model", "endpoint"],
    buckets=_LATENCY_BUCKETS,
)
FIRST_CHUNK = Histogram(
    "llmserve_time_to_first_chunk_seconds",
    "Time from request to the first streamed chunk, as seen by the ingress.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
ENGINE_RESTARTS = Counter(
    "llmserve_engine_restarts",
    "vLLM engines that died and were restarted in place (fused models).",
    ["model"],
)


ADMITTED = Gauge(
    "llmserve_admitted_requests",
    "Requests holding or waiting for a slot of a model or pipeline served in the ingress.",
    ["model", "state"],
)


def observe_request(model: str, endpoint: str, status: int, seconds: float) -> None:
    REQUESTS.labels(model, endpoint, str(status)).inc()
    LATENCY.labels(model, endpoint).observe(seconds)


def observe_first_chunk(model: str, seconds: float) -> None:
    FIRST_CHUNK.labels(model).observe(seconds)


def local_exposition() -> bytes:
    return generate_latest(REGISTRY)


def merge_exposition(texts: list[bytes]) -> bytes:
    """Merge Prometheus text expositions; samples of same-named families are joined."""
    families: dict[str, object] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            known = families.get(family.name)
            if known is None:
                families[family.name] = family
            else:
                seen = {(s.name, tuple(sorted(s.labels.items()))) for s in known.samples}
                known.samples.extend(
                    s
                    for s in family.samples
                    if (s.name, tuple(sorted(s.labels.items()))) not in seen
                )

    class _Merged:
        def collect(self):
            return families.values()

    return generate_latest(_Merged())
