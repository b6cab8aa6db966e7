"""The ingress's FastAPI app: one POST route per endpoint some route answers, plus
``/health``, ``/v1/models`` and ``/metrics``.

It never parses or re-encodes a token chunk (except those of a stream it can
resume on another replica, ``resume.py``): the servers yield vLLM's SSE
events and they go to the client as bytes (``call.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from llmserve.config import IngressConfig
from llmserve.ingress import caps
from llmserve.ingress.admission import AdmissionGate
from llmserve.ingress.body import parse_json
from llmserve.ingress.call import Target, call, error_response
from llmserve.ingress.drain import DrainWatch
from llmserve.ingress.guard import GuardMiddleware
from llmserve.ingress.health import HealthMonitor
from llmserve.ingress.routes import RouteTable
from llmserve.ingress.tenants import TENANT_SCOPE_KEY, RateLimitHeaders, Tenant, TenantTable
from llmserve.ingress.usage import open_account
from llmserve.observability import metrics
from llmserve.openai.errors import APIError, error_body, model_not_found
from llmserve.servers.clients import Client
from llmserve.servers.protocol import Endpoint, RequestMeta

logger = logging.getLogger("llmserve")

METRICS_TIMEOUT_S = 2.0
"""How long ``/metrics`` waits for the replicas; the late ones are left out."""


def build_ingress_app(
    config: IngressConfig,
    api_keys: list[str],
    routes: RouteTable,
    clients: Mapping[str, Client],
    health: HealthMonitor | None = None,
    drain: DrainWatch | None = None,
    metrics_timeout_s: float = METRICS_TIMEOUT_S,
    tenants: TenantTable | None = None,
) -> FastAPI:
    """The app for ``routes``; ``clients`` call them (one per route id), ``api_keys`` resolved;
    ``tenants`` (keys resolved too) replace ``api_keys`` when given."""
    app = FastAPI(title="llmserve", docs_url=None, redoc_url=None)
    tenants = tenants or TenantTable.from_keys(api_keys)
    app.add_middleware(RateLimitHeaders)  # inside the guard, which finds the tenant
    app.add_middleware(
        GuardMiddleware,
        tenants=tenants,
        max_body_bytes=config.max_request_body_bytes,
        retry_after_s=config.retry_after_s,
        drain=drain or DrainWatch("local"),
    )
    created = int(time.time())
    retry_after = {"Retry-After": str(config.retry_after_s)}

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.body(), exc.status, retry_after)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes (404) and wrong methods (405) in the same error shape.
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in ingress")
        return JSONResponse(error_body(500, "internal server error"), status_code=500)

    @app.get("/health")
    async def check_health() -> JSONResponse:
        problem = await health.problem() if health is not None else None
        if problem is not None:
            return error_response(error_body(503, problem), 503, retry_after)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        # A model is listed once it can answer: not while its deployment has no
        # running replica (just added by a swap, or being replaced); and only to
        # the tenants that may call it.
        missing = set(await health.missing_deployments()) if health is not None else set()
        tenant = request.scope.get(TENANT_SCOPE_KEY, tenants.anonymous)
        data = [
            {"object": "model", "created": created, "owned_by": "llmserve", **route.card}
            for route in routes.routes.values()
            if (route.deployment is None or route.deployment not in missing)
            and tenant.may_call(route.id)
        ]
        return {"object": "list", "data": data}

    sources = list(routes.metrics_sources)

    @app.get("/metrics")
    async def prometheus_metrics(request: Request) -> Response:
        # Every tenant's usage and every model's name are in it: for the operator's
        # keys (ingress.api_keys), not for tenants.
        if request.scope.get(TENANT_SCOPE_KEY, tenants.anonymous) is not tenants.anonymous:
            message = "/metrics is for the keys in ingress.api_keys, not for tenants"
            raise APIError(403, message, type="permission_error")
        others = await metrics.scrape(sources, metrics_timeout_s)
        # This replica's own part is read after the others, so that it counts this
        # scrape's errors, and put first: it wins over the copy the broadcast brings,
        # so it is there even when that copy is late.
        body = metrics.merge_exposition([metrics.replica_exposition(), *others])
        return Response(body, media_type=metrics.CONTENT_TYPE)

    # One gate per id served in this process, shared by all its endpoints (and adapters).
    gates = {
        route.id: AdmissionGate(
            route.id, *route.limits, config.priority_reserved_share, config.priority_aging_s
        )
        for route in routes.routes.values()
        if route.limits is not None and route.base is None
    }
    for endpoint in Endpoint:
        serving = routes.serving(endpoint)
        if not serving:  # never advertise a route that nothing behind it implements
            continue
        targets = {
            id_: Target(
                route,
                clients[id_],
                route.timeout_s or config.request_timeout_s,
                gates.get(route.gate_key),
                retry_after,
                health,
                send_timeout_s=config.send_timeout_s,
            )
            for id_, route in serving.items()
        }
        endpoint_fn = _make_endpoint(endpoint, targets, tenants.anonymous)
        app.add_api_route(endpoint.path, endpoint_fn, methods=["POST"])
    return app


def _make_endpoint(endpoint: Endpoint, targets: dict[str, Target], anonymous: Tenant):  # noqa: ANN202
    id_field = endpoint.id_field

    async def serve_endpoint(request: Request) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:  # gone mid-request: nobody to answer, nothing to log
            return Response(status_code=499)
        body = parse_json(raw)
        target_id = body.get(id_field)
        if not isinstance(target_id, str) or not target_id:
            raise APIError(400, f"you must provide a '{id_field}' parameter", param=id_field)
        tenant: Tenant = request.scope.get(TENANT_SCOPE_KEY, anonymous)
        target = targets.get(target_id) if tenant.may_call(target_id) else None
        if target is None:
            raise model_not_found(target_id, id_field)
        # Before admission, rate limits and any handle call: a request past a cap costs nothing.
        caps.check(target.route.caps, endpoint, body, target_id)
        account = None
        if tenant.accounted:  # tenants are configured (``tenants.py``, ``usage.py``)
            opened = open_account(tenant, target.route, endpoint, body, len(raw))
            if isinstance(opened, Response):
                return opened  # over a rate limit
            account = opened
        tenant_id = None if tenant is anonymous else tenant.id
        meta = RequestMeta.from_headers(request.headers, tenant_id, tenant.priority)
        return await call(target, endpoint, body, meta, account)

    serve_endpoint.__name__ = f"create_{endpoint}"
    return serve_endpoint
