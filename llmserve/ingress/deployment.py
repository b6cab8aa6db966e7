"""The OpenAI-compatible HTTP ingress (FastAPI, SSE via sse-starlette).

It holds ``{served id: DeploymentHandle}`` maps, built from the config each
time the app is (re)deployed, and routes on the request's ``model``. It
never parses or re-encodes a token chunk: the LLM server yields vLLM's SSE
events and they go to the client as bytes, each the moment it arrives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmserve.ingress.admission import AdmissionGate
from llmserve.ingress.deadline import StreamDeadline
from llmserve.ingress.drain import DrainWatch
from llmserve.ingress.guard import GuardMiddleware
from llmserve.ingress.health import HealthMonitor
from llmserve.ingress.local_handle import LocalHandle
from llmserve.ingress.resume import StreamState, resumable
from llmserve.ingress.sse import EventStream
from llmserve.observability import metrics
from llmserve.openai.errors import (
    APIError,
    error_body,
    from_exception,
    status_of,
    timed_out,
    unavailable,
)

logger = logging.getLogger("llmserve")

_DONE = b"data: [DONE]\n\n"
_RETRY_DELAYS_S = (0.25, 0.5, 1.0)
"""Pauses before replaying a handle call that failed before its first byte with
503 or a dead replica. A replica whose engine died exits within a second (see
llm_server.py), after which Serve's router no longer picks it."""


@dataclass
class IngressSettings:
    # Literal keys or ``{env: NAME}`` entries, resolved inside the replica so
    # that secret values never become deployment arguments (which Serve's
    # controller stores).
    api_keys: list[Any] = field(default_factory=list)
    max_request_body_bytes: int = 1 << 20
    request_timeout_s: float = 300.0
    retry_after_s: int = 1
    metrics_timeout_s: float = 2.0
    """How long ``/metrics`` waits for the replicas; the late ones are left out."""


@dataclass
class LocalPipeline:
    """A RAG pipeline whose generator is the fused model.

    Its router runs inside the ingress and calls the fused engine in-process,
    so a pipeline request never waits on an ingress request slot (no cycle
    in the call graph). Retriever and reranker stay separate deployments.
    """

    config: Any
    tokenizer_path: str
    retriever: Any
    reranker: Any | None


@dataclass
class Routes:
    """Which handle serves which id, per endpoint. Empty maps mean no route."""

    chat: dict[str, Any] = field(default_factory=dict)
    completions: dict[str, Any] = field(default_factory=dict)
    responses: dict[str, Any] = field(default_factory=dict)
    """Generative models and RAG pipelines (``/v1/responses``)."""
    tokenize: dict[str, Any] = field(default_factory=dict)
    """Generative models; the same handles serve ``/tokenize`` and ``/detokenize``."""
    embeddings: dict[str, Any] = field(default_factory=dict)
    rerank: dict[str, Any] = field(default_factory=dict)
    retrieve: dict[str, Any] = field(default_factory=dict)
    model_cards: list[dict[str, Any]] = field(default_factory=list)
    metrics_sources: list[Any] = field(default_factory=list)
    """Handles of the deployments whose replicas ``/metrics`` asks (``metrics_text``)."""
    timeouts: dict[str, float] = field(default_factory=dict)
    """Per served id, where it overrides ``IngressSettings.request_timeout_s``."""
    limits: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Ids served in this process: (max_ongoing, max_queued) for their admission gate."""
    local_pipelines: list[LocalPipeline] = field(default_factory=list)
    resumable: set[str] = field(default_factory=set)
    """Ids whose streams continue on another replica when theirs dies."""
    deployments: list[str] = field(default_factory=list)
    """Deployment names behind the ingress; ``/health`` needs a running replica of each."""
    adapters: dict[str, str] = field(default_factory=dict)
    """LoRA adapter id -> its base model's id, whose routes, gate and timeout it shares."""


class Ingress:
    """Serve deployment class; see ``build_ingress_app`` for the routes.

    With a fused model, that model's vLLM engine runs in this replica and its
    requests are served in-process, exactly like vLLM's own server: the
    token stream crosses no Ray hop. RAG pipelines that generate with it run
    their router here too. No request ever calls back into the ingress; only
    ``/metrics`` asks every ingress replica for its ``metrics_text``.
    """

    async def __init__(self, settings: IngressSettings, routes: Routes, fused=None, home=None):
        from llmserve.config.ingress import resolve_api_keys

        self.settings = replace(settings, api_keys=resolve_api_keys(settings.api_keys))
        # A copy: Serve pickles the init args later to list outbound handles,
        # and the local handles below hold an engine that cannot be pickled.
        self.routes = routes = replace(
            routes,
            chat=dict(routes.chat),
            completions=dict(routes.completions),
            responses=dict(routes.responses),
            tokenize=dict(routes.tokenize),
            retrieve=dict(routes.retrieve),
            metrics_sources=[*routes.metrics_sources, *_own_deployment()],
        )
        self._local = None
        if fused is not None:
            from llmserve.servers.llm_server import LLMServer

            self._local = await LLMServer.create(fused, home)
            local = LocalHandle(self._local)
            routes.chat[fused.id] = routes.completions[fused.id] = local
            routes.responses[fused.id] = local
            routes.tokenize[fused.id] = local
        for pipeline in routes.local_pipelines:
            self._add_local_pipeline(pipeline)
        self._drain = DrainWatch(_replica_id())
        self._drain.start()
        self._health = HealthMonitor(
            app_name=_app_name(),
            deployments=routes.deployments,
            local_check=self._local.probe if self._local is not None else None,
        )

    def _add_local_pipeline(self, pipeline: LocalPipeline) -> None:
        from llmserve.servers.rag.router import RAGRouter

        router = RAGRouter(
            pipeline.config,
            pipeline.tokenizer_path,
            pipeline.retriever,
            pipeline.reranker,
            LocalHandle(self._local),
        )
        self.routes.chat[pipeline.config.id] = LocalHandle(router)
        self.routes.responses[pipeline.config.id] = LocalHandle(router)
        self.routes.retrieve[pipeline.config.id] = LocalHandle(router)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_ingress_app(self.settings, self.routes, self._health, self._drain)

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


def build_ingress_app(
    settings: IngressSettings,
    routes: Routes,
    health: HealthMonitor | None = None,
    drain: DrainWatch | None = None,
) -> FastAPI:
    app = FastAPI(title="llmserve", docs_url=None, redoc_url=None)
    app.add_middleware(
        GuardMiddleware,
        keys=settings.api_keys,
        max_body_bytes=settings.max_request_body_bytes,
        retry_after_s=settings.retry_after_s,
        drain=drain or DrainWatch("local"),
    )
    created = int(time.time())
    for adapter, base in routes.adapters.items():
        for handles in (routes.chat, routes.completions, routes.responses, routes.tokenize):
            if base in handles:
                handles[adapter] = handles[base]

    retry_after = {"Retry-After": str(settings.retry_after_s)}

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc.body(), exc.status, retry_after)

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
            return _error_response(error_body(503, problem), 503, retry_after)
        return JSONResponse({"status": "ok"})

    # Which deployment answers each id (none for what runs in this process).
    deployment_of = {
        id_: name
        for handles in (routes.chat, routes.completions, routes.embeddings, routes.rerank)
        for id_, handle in handles.items()
        if (name := getattr(handle, "deployment_name", None)) is not None
    }

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        # A model is listed once it can answer: not while its deployment has no
        # running replica (just added by a swap, or being replaced).
        missing = set(await health.missing_deployments()) if health is not None else set()
        data = [
            {"object": "model", "created": created, "owned_by": "llmserve", **card}
            for card in routes.model_cards
            if deployment_of.get(card["id"]) not in missing
        ]
        return {"object": "list", "data": data}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        others = await metrics.scrape(routes.metrics_sources, settings.metrics_timeout_s)
        # This replica's own part is read after the others, so that it counts this
        # scrape's errors, and put first: it wins over the copy the broadcast brings,
        # so it is there even when that copy is late.
        body = metrics.merge_exposition([metrics.replica_exposition(), *others])
        return Response(body, media_type=metrics.CONTENT_TYPE)

    endpoints = {
        "/v1/chat/completions": ("chat", routes.chat),
        "/v1/completions": ("completions", routes.completions),
        "/v1/responses": ("responses", routes.responses),
        "/tokenize": ("tokenize", routes.tokenize),
        "/detokenize": ("detokenize", routes.tokenize),
        "/v1/embeddings": ("embeddings", routes.embeddings),
        "/v1/rerank": ("rerank", routes.rerank),
        "/v1/retrieve": ("retrieve", routes.retrieve),
    }
    # One gate per id served in this process, shared by all its endpoints.
    gates = {id_: AdmissionGate(id_, *limit) for id_, limit in routes.limits.items()}
    for path, (method, handles) in endpoints.items():
        if handles:  # never advertise a route that nothing behind it implements
            targets = {
                id_: _Target(
                    id_,
                    handle,
                    routes.timeouts.get(base, settings.request_timeout_s),
                    gates.get(base),
                    retry_after,
                    health,
                    base in routes.resumable,
                )
                for id_, handle in handles.items()
                for base in [routes.adapters.get(id_, id_)]
            }
            app.add_api_route(path, _make_endpoint(method, targets), methods=["POST"])
    return app


@dataclass
class _Target:
    id: str
    handle: Any
    timeout_s: float
    gate: AdmissionGate | None
    """Only for what runs in this process; Serve bounds handle calls itself."""
    retry_after: dict[str, str]
    health: HealthMonitor | None = None
    resume: bool = False
    """Continue a stream on another replica when its replica dies (resume.py)."""

    def known_unavailable(self) -> bool:
        """A deployment with no running replica: answer 503 now instead of waiting."""
        name = getattr(self.handle, "deployment_name", None)
        return self.health is not None and name is not None and self.health.known_missing(name)


def _make_endpoint(method: str, targets: dict[str, _Target]):
    id_field = "pipeline" if method == "retrieve" else "model"

    async def endpoint(request: Request) -> Response:
        body = _parse_json(await request.body())
        target_id = body.get(id_field)
        if not isinstance(target_id, str) or not target_id:
            raise APIError(400, f"you must provide a '{id_field}' parameter", param=id_field)
        target = targets.get(target_id)
        if target is None:
            raise APIError(404, f"Could not find model '{target_id}'", param=id_field)
        return await _call(target, method, body)

    endpoint.__name__ = f"create_{method}"
    return endpoint


def _error_response(body: dict[str, Any], status: int, retry_after: dict[str, str]):
    # 429 and 503 tell the client when to come back (the OpenAI SDK honours it).
    headers = retry_after if status in (429, 503) else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _call(target: _Target, method: str, body: dict[str, Any]) -> Response:
    start = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + target.timeout_s
    release = _nothing
    gen = None
    try:
        if target.known_unavailable():
            raise unavailable(target.id)
        if target.gate is not None:
            release = await target.gate.enter(target.timeout_s)
        state = StreamState(method, body) if target.resume and resumable(method, body) else None
        gen, first = await _first_item(
            target, method, state.request_body() if state else body, deadline
        )
    except asyncio.CancelledError:  # the client left: free the engine, don't log a 500
        _close(gen, release)
        metrics.observe_request(target.id, method, 499, time.perf_counter() - start)
        raise
    except BaseException as exc:
        _close(gen, release)
        err = _failure(exc, target, method)
        metrics.observe_request(target.id, method, err.status, time.perf_counter() - start)
        raise err from None
    if isinstance(first, dict):
        _close(gen, release)
        status = status_of(first) if "error" in first else 200
        metrics.observe_request(target.id, method, status, time.perf_counter() - start)
        return _error_response(first, status, target.retry_after)
    metrics.observe_first_chunk(target.id, time.perf_counter() - start)
    return EventStream(
        _relay(gen, first, target, method, start, deadline, release, state),
        ping=15,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _first_item(target: _Target, method: str, body: dict[str, Any], deadline: float):
    """Start the call and wait for its first item.

    A replica that answered 503 or died before sending anything did no work
    for this request, so it is safe to replay on another replica: Serve's
    router has dropped a dead replica by then. In-process targets are not
    replayed (there is no other engine here; HAProxy retries the 503 on
    another ingress replica).
    """
    # The pause before the next try; None on the last (or only) one.
    pauses = (*_RETRY_DELAYS_S, None) if target.gate is None else (None,)
    for pause in pauses:
        gen = getattr(target.handle.options(stream=True), method).remote(body)
        try:
            async with asyncio.timeout_at(deadline):
                first = await gen.__anext__()
        except BaseException as exc:
            gen.cancel()
            if pause is None or not isinstance(exc, Exception) or not _unavailable(exc):
                raise
            logger.warning("%s.%s: replica unavailable, retrying", target.id, method)
        else:
            if pause is None or not (isinstance(first, dict) and status_of(first) == 503):
                return gen, first
            gen.cancel()
            logger.warning("%s.%s: replica answered 503, retrying", target.id, method)
        await asyncio.sleep(pause)
    raise AssertionError("unreachable: the last try returns or raises")


def _unavailable(exc: Exception) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    if isinstance(exc, APIError):
        return exc.status == 503
    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))


async def _relay(
    gen,
    first: str,
    target: _Target,
    method: str,
    start: float,
    deadline: float,
    release,
    state: StreamState | None = None,
) -> AsyncIterator[bytes]:
    status = 200
    out = state.relay if state is not None else str.encode
    timer = StreamDeadline(deadline)  # times the waits for chunks, never the writer
    try:
        yield out(first)
        while True:
            try:
                event = await timer.next(gen)
            except StopAsyncIteration:
                break
            except Exception as exc:
                if state is None or not _unavailable(exc) or not state.can_resume():
                    raise
                gen.cancel()
                gen, event = await _continue(target, state, deadline)
                out = state.relay_continued
            yield out(event)
    except asyncio.CancelledError:
        status = 499  # client went away; cancelling gen aborts the engine request
        raise
    except Exception as exc:  # mid-stream: an SSE error event, then [DONE]
        err = _failure(exc, target, method)
        status = err.status
        yield b"data: " + json.dumps(err.body()).encode() + b"\n\n"
        yield _DONE
    finally:
        timer.close()
        _close(gen, release)
        metrics.observe_request(target.id, method, status, time.perf_counter() - start)


async def _continue(target: _Target, state: StreamState, deadline: float):
    """The rest of a stream whose replica died, from another replica (see resume.py)."""
    logger.warning(
        "%s: replica died mid-stream after %d tokens; continuing on another replica",
        target.id,
        len(state.token_ids),
    )
    try:
        gen, first = await _first_item(target, "completions", state.continuation(), deadline)
    except BaseException:
        metrics.STREAM_RESUMPTIONS.labels(target.id, "failed").inc()
        raise
    if isinstance(first, dict):  # refused (e.g. 503 again): end the stream with that error
        gen.cancel()
        metrics.STREAM_RESUMPTIONS.labels(target.id, "failed").inc()
        raise APIError(status_of(first), first.get("error", {}).get("message", "unavailable"))
    metrics.STREAM_RESUMPTIONS.labels(target.id, "resumed").inc()
    return gen, first


def _failure(exc: BaseException, target: _Target, method: str) -> APIError:
    if isinstance(exc, StopAsyncIteration):
        logger.error("%s.%s answered nothing", target.id, method)
        return APIError(500, "internal server error")
    if isinstance(exc, TimeoutError):
        return timed_out(target.id, target.timeout_s)
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to map
        raise exc
    return from_exception(exc, target.id, logger)


def _nothing() -> None:
    pass


def _close(gen, release) -> None:
    if gen is not None:
        gen.cancel()
    release()


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON does not, and neither do engines.
    raise ValueError(f"{name} is not valid JSON")


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    # JSON may escape a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 text can
    # hold: tokenizers and JSON answers would fail on it later. Only escaped
    # bodies can carry one, so only they pay for the check.
    if b"\\ud" in raw or b"\\uD" in raw:
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise APIError(400, "request body holds an unpaired UTF-16 surrogate") from None
    return body
