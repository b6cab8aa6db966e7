"""The OpenAI-compatible HTTP ingress (FastAPI, SSE via sse-starlette).

It holds ``{served id: DeploymentHandle}`` maps, built from the config each
time the app is (re)deployed, and routes on the request's ``model``. It
never parses or re-encodes a token chunk: the LLM server yields vLLM's SSE
events and they go to the client as bytes, each the moment it arrives.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmserve.deployments import metrics
from llmserve.deployments.local_handle import LocalHandle
from llmserve.openai.errors import APIError, error_body, status_of

logger = logging.getLogger("llmserve")

_DONE = b"data: [DONE]\n\n"


@dataclass
class IngressSettings:
    api_keys: list[str] = field(default_factory=list)
    max_request_body_bytes: int = 1 << 20


@dataclass
class Routes:
    """Which handle serves which id, per endpoint. Empty maps mean no route."""

    chat: dict[str, Any] = field(default_factory=dict)
    completions: dict[str, Any] = field(default_factory=dict)
    embeddings: dict[str, Any] = field(default_factory=dict)
    rerank: dict[str, Any] = field(default_factory=dict)
    retrieve: dict[str, Any] = field(default_factory=dict)
    model_cards: list[dict[str, Any]] = field(default_factory=list)
    metrics_sources: list[Any] = field(default_factory=list)


class Ingress:
    """Serve deployment class; see ``build_ingress_app`` for the routes.

    With a fused model, that model's vLLM engine runs in this replica and its
    requests are served in-process, exactly like vLLM's own server: the
    token stream crosses no Ray hop. Other ids still go through handles, and
    ``chat``/``completions`` let the RAG router use the fused model too.
    """

    async def __init__(self, settings: IngressSettings, routes: Routes, fused=None, home=None):
        self.settings = settings
        # A copy: Serve pickles the init args later to list outbound handles,
        # and the local handle below holds an engine that cannot be pickled.
        self.routes = routes = replace(
            routes, chat=dict(routes.chat), completions=dict(routes.completions)
        )
        self._local = None
        if fused is not None:
            from llmserve.deployments.llm_server import LLMServer

            self._local = await LLMServer.create(fused, home)
            handle = LocalHandle(self._local)
            routes.chat[fused.id] = handle
            routes.completions[fused.id] = handle

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_ingress_app(self.settings, self.routes)

    async def chat(self, body: dict[str, Any]):
        async for item in self._local.chat(body):
            yield item

    async def completions(self, body: dict[str, Any]):
        async for item in self._local.completions(body):
            yield item

    async def check_health(self) -> None:
        if self._local is not None:
            await self._local.check_health()


def build_ingress_app(settings: IngressSettings, routes: Routes) -> FastAPI:
    app = FastAPI(title="llmserve", docs_url=None, redoc_url=None)
    app.add_middleware(_GuardMiddleware, settings=settings)
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

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
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [
            {"object": "model", "created": created, "owned_by": "llmserve", **card}
            for card in routes.model_cards
        ]
        return {"object": "list", "data": data}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        texts = await asyncio.gather(
            *(h.metrics_text.remote() for h in routes.metrics_sources), return_exceptions=True
        )
        body = metrics.merge_exposition(
            [metrics.local_exposition()] + [t for t in texts if isinstance(t, bytes)]
        )
        return Response(body, media_type=metrics.CONTENT_TYPE)

    endpoints = {
        "/v1/chat/completions": ("chat", routes.chat),
        "/v1/completions": ("completions", routes.completions),
        "/v1/embeddings": ("embeddings", routes.embeddings),
        "/v1/rerank": ("rerank", routes.rerank),
        "/v1/retrieve": ("retrieve", routes.retrieve),
    }
    for path, (method, targets) in endpoints.items():
        if targets:  # never advertise a route that nothing behind it implements
            app.add_api_route(path, _make_endpoint(method, targets), methods=["POST"])
    return app


def _make_endpoint(method: str, targets: dict[str, Any]):
    id_field = "pipeline" if method == "retrieve" else "model"

    async def endpoint(request: Request) -> Response:
        body = _parse_json(await request.body())
        target_id = body.get(id_field)
        if not isinstance(target_id, str) or not target_id:
            raise APIError(400, f"you must provide a '{id_field}' parameter", param=id_field)
        handle = targets.get(target_id)
        if handle is None:
            raise APIError(404, f"Could not find model '{target_id}'", param=id_field)
        return await _call(handle, method, target_id, body)

    endpoint.__name__ = f"create_{method}"
    return endpoint


async def _call(handle, method: str, target_id: str, body: dict[str, Any]) -> Response:
    start = time.perf_counter()
    stream = handle.options(stream=True)
    gen = getattr(stream, method).remote(body)
    try:
        first = await gen.__anext__()
    except StopAsyncIteration:
        first = error_body(500, "empty response from model")
    except BaseException as exc:
        gen.cancel()
        raise _upstream_error(exc, target_id) from None
    if isinstance(first, dict):
        gen.cancel()
        status = status_of(first) if "error" in first else 200
        metrics.observe_request(target_id, method, status, time.perf_counter() - start)
        return JSONResponse(first, status_code=status)
    metrics.observe_first_chunk(target_id, time.perf_counter() - start)
    return EventSourceResponse(
        _relay(gen, first, target_id, method, start),
        ping=15,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _relay(
    gen, first: str, target_id: str, method: str, start: float
) -> AsyncIterator[bytes]:
    status = 200
    try:
        yield first.encode()
        async for event in gen:
            yield event.encode()
    except asyncio.CancelledError:
        status = 499  # client went away; cancelling gen aborts the engine request
        raise
    except Exception as exc:  # mid-stream: an SSE error event, then [DONE]
        err = _upstream_error(exc, target_id)
        status = err.status
        yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
        yield _DONE
    finally:
        gen.cancel()
        metrics.observe_request(target_id, method, status, time.perf_counter() - start)


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    return body


def _upstream_error(exc: BaseException, target_id: str) -> APIError:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, BackPressureError):
        return APIError(503, f"model '{target_id}' is overloaded, retry later")
    if isinstance(
        exc, (DeploymentUnavailableError, RayActorError, ActorDiedError, ActorUnavailableError)
    ):
        return APIError(503, f"model '{target_id}' is unavailable")
    if isinstance(exc, APIError):
        return exc
    logger.error("request to %s failed", target_id, exc_info=exc)
    return APIError(500, "internal server error")


class _GuardMiddleware:
    """API keys on every route but ``/health``, and the request body size limit.

    A plain ASGI middleware so an oversized body is refused while it streams
    in, not after it has been buffered.
    """

    def __init__(self, app, settings: IngressSettings):
        self.app = app
        self.keys = [k.encode() for k in settings.api_keys]
        self.limit = settings.max_request_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].endswith("/health"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.keys and not self._authorized(headers.get(b"authorization", b"")):
            return await _send_error(send, APIError(401, "invalid or missing API key"))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _send_error(send, self._too_large())
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except APIError as exc:
            if exc.status != 413:
                raise
            await _send_error(send, exc)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return any(hmac.compare_digest(token.strip(), key) for key in self.keys)

    def _too_large(self) -> APIError:
        return APIError(413, f"request body exceeds {self.limit} bytes")


async def _send_error(send, exc: APIError) -> None:
    body = json.dumps(exc.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
