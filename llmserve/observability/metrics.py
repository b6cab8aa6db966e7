"""Prometheus metrics for the ingress, and one scrape over every replica of the app.

Each process keeps its own prometheus-client registry (vLLM registers its
``vllm:*`` engine metrics in the LLM server's, and in the ingress's for a
fused model). ``/metrics`` asks every replica of every deployment, the
ingress's included, for its exposition (Serve's ``DeploymentHandle.broadcast``)
and merges them, each sample labelled with the ``replica`` that counted it:
the same label Serve's own ``ray_serve_*`` metrics use. Sums over replicas are
the app's totals, and a series never flips between replicas' values.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from llmserve.compat.ray import ReplicaCall, replica_calls

logger = logging.getLogger("llmserve")

CONTENT_TYPE = CONTENT_TYPE_LATEST
REPLICA_LABEL = "replica"

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
STREAM_RESUMPTIONS = Counter(
    "llmserve_stream_resumptions",
    "Streams whose replica died mid-way, by whether another replica continued them.",
    ["model", "outcome"],
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

# Per tenant (``ingress.tenants``): the label set is bounded by the config, every caller
# that is no tenant shares the label "anonymous", and a model label only ever holds a served id.
TENANT_REQUESTS = Counter(
    "llmserve_tenant_requests",
    "Requests answered by the ingress, by tenant, model and HTTP status.",
    ["tenant", "model", "status"],
)
TENANT_TOKENS = Counter(
    "llmserve_tenant_tokens",
    "Tokens vLLM reported for a tenant's requests, by model and kind (prompt, completion).",
    ["tenant", "model", "kind"],
)
TENANT_RATE_LIMITED = Counter(
    "llmserve_tenant_rate_limited",
    "429 answers to a tenant, by reason: its requests or tokens per minute, or capacity "
    "(the model or pipeline was full).",
    ["tenant", "reason"],
)
TENANT_FIRST_CHUNK = Histogram(
    "llmserve_tenant_time_to_first_chunk_seconds",
    "Time from request to the first streamed chunk, by tenant, as seen by the ingress.",
    ["tenant"],
    buckets=_LATENCY_BUCKETS,
)

SCRAPE_ERRORS = Counter(
    "llmserve_metrics_scrape_errors",
    "Replicas left out of a /metrics answer: they failed or did not answer in time.",
    ["deployment"],
)


def observe_request(model: str, endpoint: str, status: int, seconds: float) -> None:
    REQUESTS.labels(model, endpoint, str(status)).inc()
    LATENCY.labels(model, endpoint).observe(seconds)


def observe_first_chunk(model: str, seconds: float) -> None:
    FIRST_CHUNK.labels(model).observe(seconds)


@dataclass(frozen=True)
class ReplicaMetrics:
    """One replica's exposition, as a deployment's ``metrics_text`` returns it."""

    replica: str
    """Serve's replica id (``ReplicaID.unique_id``); empty outside a replica."""
    text: bytes


def replica_exposition() -> ReplicaMetrics:
    """This process's registry, named by the Serve replica it runs."""
    return ReplicaMetrics(_replica_id(), generate_latest(REGISTRY))


def _replica_id() -> str:
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (unit tests)
        return ""


async def scrape(handles: Iterable[Any], timeout_s: float) -> list[ReplicaMetrics]:
    """Every replica's ``metrics_text()`` from each deployment handle, within ``timeout_s``.

    A replica that fails or has not answered by then is left out and counted in
    ``llmserve_metrics_scrape_errors``; the scrape itself never waits longer.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    per_deployment = await asyncio.gather(*(_scrape_one(h, deadline) for h in handles))
    return [part for parts in per_deployment for part in parts]


async def _scrape_one(handle: Any, deadline: float) -> list[ReplicaMetrics]:
    name = handle.deployment_name
    try:
        # broadcast() bypasses the replicas' request queues, so a saturated
        # replica still answers.
        response = handle.broadcast("metrics_text")
        async with asyncio.timeout_at(deadline):
            calls = await replica_calls(response)
    except Exception as exc:  # no running replica, or none known in time
        _count_error(name, exc)
        return []

    async def one(call: ReplicaCall) -> ReplicaMetrics | None:
        try:
            async with asyncio.timeout_at(deadline):
                return await call.get_async()
        except Exception as exc:
            _count_error(name, exc)
            return None

    return [part for part in await asyncio.gather(*(one(c) for c in calls)) if part is not None]


def _count_error(deployment: str, exc: BaseException) -> None:
    logger.warning("/metrics: a replica of %s left out: %r", deployment, exc)
    SCRAPE_ERRORS.labels(deployment).inc()


def merge_exposition(parts: list[ReplicaMetrics]) -> bytes:
    """Merge replicas' Prometheus expositions into one.

    Every sample gets its replica's ``replica`` label, so same-named series
    of different replicas stay apart; a family's HELP and TYPE appear once.
    A replica sent twice is kept once.
    """
    families: dict[str, Any] = {}
    seen_replicas: set[str] = set()
    for part in parts:
        if part.replica in seen_replicas:
            continue
        seen_replicas.add(part.replica)
        for family in text_string_to_metric_families(part.text.decode()):
            samples = [_labelled(s, part.replica) for s in family.samples]
            known = families.get(family.name)
            if known is None:
                family.samples = samples
                families[family.name] = family
            else:
                known.samples.extend(samples)

    class _Merged:
        def collect(self):
            return families.values()

    return generate_latest(_Merged())


def _labelled(sample: Sample, replica: str) -> Sample:
    if not replica:
        return sample
    return sample._replace(labels={**sample.labels, REPLICA_LABEL: replica})
