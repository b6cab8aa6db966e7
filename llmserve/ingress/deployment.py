"""The ingress Serve deployment: the OpenAI-compatible HTTP front door.

It gets one ``Route`` per served id from the builder (``routes.py``) and
calls each through a client (``servers/clients.py``): a Serve handle, or an
in-process call for what runs here. With a fused model, that model's vLLM
engine runs in this replica and its requests are served in-process, exactly
like vLLM's own server: the token stream crosses no Ray hop. RAG pipelines
that generate with it run their router here too. No request ever calls back
into the ingress; only ``/metrics`` asks every ingress replica for its
``metrics_text``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import Any

from fastapi import FastAPI

from llmserve.config import IngressConfig, ModelConfig
from llmserve.config.ingress import resolve_api_keys
from llmserve.ingress.app import build_ingress_app
from llmserve.ingress.drain import DrainWatch
from llmserve.ingress.health import HealthMonitor
from llmserve.ingress.replicas import ReplicaCount, serve_replica_count
from llmserve.ingress.routes import Local, LocalPipeline, RouteTable
from llmserve.ingress.tenants import TenantTable
from llmserve.observability import metrics
from llmserve.servers.clients import Client, LocalClient, StreamClient

logger = logging.getLogger("llmserve")


class Ingress:
    """Serve deployment class; ``build_ingress_app`` has the routes."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        config: IngressConfig,
        routes: RouteTable,
        fused: ModelConfig | None = None,
        home: str | None = None,
    ):
        # Before anything starts (a fused engine): every deploy path (run, deploy, a
        # Serve config, KubeRay) ends here, also with a config copied without validation.
        problem = config.unauthenticated_exposure()
        if problem is not None:
            raise ValueError(f"ingress.api_keys: {problem}")
        warning = config.open_warning()
        if warning:
            logger.warning(warning)
        self.config = config
        # Keys given as {env: NAME} are read here, inside the replica, so that
        # secret values never become deployment arguments (which Serve's
        # controller stores).
        self.api_keys = resolve_api_keys(config.api_keys)
        # The tenants' rate limits are shared by the ingress replicas running (replicas.py);
        # until Serve says how many, as many as the deployment starts with.
        own = (fused.deployment if fused is not None else config.deployment).replica_bounds()
        replicas = ReplicaCount(own.initial, _replica_counter())
        self.tenants = TenantTable.build(config, self.api_keys, replicas)
        self.routes = routes
        self._local = None
        if fused is not None:
            from llmserve.servers.llm_server import LLMServer

            self._local = await LLMServer.create(fused, home)
        self.clients = self._clients(routes)
        self._drain = DrainWatch(_replica_id())
        self._drain.start()
        self._health = HealthMonitor(
            app_name=_app_name(),
            deployments=routes.deployments,
            local_check=self._local.probe if self._local is not None else None,
        )

    def _clients(self, routes: RouteTable) -> dict[str, Client]:
        """One client per route; routes served by the same deployment share it."""
        clients: dict[str, Client] = {}
        shared: dict[str, Client] = {}
        for route in routes.routes.values():
            key = route.base or route.id
            if key not in shared:
                if route.local is Local.FUSED_MODEL:
                    shared[key] = LocalClient(self._local)  # type: ignore[arg-type]
                elif route.local is Local.PIPELINE:
                    shared[key] = self._local_pipeline(routes.pipelines[route.id])
                else:
                    shared[key] = StreamClient(route.handle)
            clients[route.id] = shared[key]
        return clients

    def _local_pipeline(self, pipeline: LocalPipeline) -> LocalClient:
        from llmserve.servers.rag.router import RAGRouter

        router = RAGRouter(
            pipeline.config,
            pipeline.tokenizer_path,
            pipeline.retriever,
            pipeline.reranker,
            LocalClient(self._local),  # type: ignore[arg-type]
            pipeline.base_url,
        )
        return LocalClient(router)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Serve pickles the init args later to list outbound handles; the clients
        # hold an engine that cannot be pickled, so they live only here.
        sources = [*self.routes.metrics_sources, *_own_deployment()]
        routes = replace(self.routes, metrics_sources=sources)
        return build_ingress_app(
            self.config,
            self.api_keys,
            routes,
            self.clients,
            self._health,
            self._drain,
            tenants=self.tenants,
        )

    async def metrics_text(self) -> metrics.ReplicaMetrics:
        """This replica's metrics (and its fused engine's), for the replica answering /metrics."""
        return metrics.replica_exposition()

    async def check_health(self) -> None:
        if self._local is not None:
            await self._local.check_health()


def _replica_id() -> str:
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (unit tests)
        return "local"


def _replica_counter() -> Any:
    """Reads how many replicas this replica's deployment has (None outside a replica)."""
    from ray import serve

    try:
        context = serve.get_replica_context()
    except Exception:  # outside a replica (unit tests)
        return None
    return functools.partial(serve_replica_count, context.app_name, context.deployment)


def _own_deployment() -> list[Any]:
    """A handle to this replica's own deployment, so /metrics reaches the other ingress
    replicas too. Only ``broadcast`` uses it, which bypasses the request queues, so
    this is no request cycle."""
    from ray import serve

    try:
        context = serve.get_replica_context()
    except Exception:  # outside a replica (unit tests)
        return []
    return [serve.get_deployment_handle(context.deployment, context.app_name)]


def _app_name() -> str:
    from ray import serve

    try:
        return serve.get_replica_context().app_name
    except Exception:  # outside a replica (unit tests)
        return ""
