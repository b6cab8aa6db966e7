"""One request through the ingress: admission, the call, its first item, then the relay.

The first item decides the answer: a whole JSON answer (or an error body,
see ``servers/protocol.py``) goes out as JSON with its status; the first SSE
event starts a stream, relayed chunk by chunk as bytes, each the moment it
arrives. A call that failed before its first byte did no work and is replayed
on another replica; a stream whose replica dies mid-way continues on another
one where it can (``resume.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi.responses import JSONResponse, Response

from llmserve.compat.sse_starlette import EventStream
from llmserve.ingress.admission import AdmissionGate
from llmserve.ingress.deadline import StreamDeadline
from llmserve.ingress.health import HealthMonitor
from llmserve.ingress.resume import StreamState, resumable
from llmserve.ingress.routes import Route
from llmserve.ingress.usage import Account
from llmserve.observability import metrics
from llmserve.openai import sse
from llmserve.openai.errors import APIError, from_exception, status_of, timed_out, unavailable
from llmserve.servers.clients import Client
from llmserve.servers.protocol import Body, Endpoint, Item, ItemStream, RequestMeta

logger = logging.getLogger("llmserve")

_RETRY_DELAYS_S = (0.25, 0.5, 1.0)
"""Pauses before replaying a handle call that failed before its first byte with
503 or a dead replica. A replica whose engine died exits within a second (see
servers/llm_server.py), after which Serve's router no longer picks it."""

Release = Callable[[], None]


@dataclass
class Target:
    """A route as this ingress replica calls it."""

    route: Route
    client: Client
    timeout_s: float
    gate: AdmissionGate | None
    """Only for what runs in this process; Serve bounds handle calls itself."""
    retry_after: dict[str, str]
    health: HealthMonitor | None = None
    send_timeout_s: float | None = None
    """How long a stream's client may accept no bytes before it is cut (slow readers)."""

    @property
    def id(self) -> str:
        return self.route.id

    def known_unavailable(self) -> bool:
        """A deployment with no running replica: answer 503 now instead of waiting."""
        name = self.route.deployment
        return self.health is not None and name is not None and self.health.known_missing(name)


def error_response(body: dict, status: int, retry_after: dict[str, str]) -> JSONResponse:
    # 429 and 503 tell the client when to come back (the OpenAI SDK honours it).
    headers = retry_after if status in (429, 503) else None
    return JSONResponse(body, status_code=status, headers=headers)


async def call(
    target: Target,
    endpoint: Endpoint,
    body: Body,
    meta: RequestMeta,
    account: Account | None = None,
) -> Response:
    """``account``: the request's tenant usage (``usage.py``), when tenants are configured."""
    start = time.perf_counter()
    deadline = asyncio.get_running_loop().time() + target.timeout_s
    release: Release = _nothing
    gen = None
    state = None
    try:
        if target.known_unavailable():
            raise unavailable(target.id)
        if target.gate is not None:
            release = await target.gate.enter(target.timeout_s, meta.priority)
        if target.route.resumable and resumable(endpoint, body):
            state = StreamState(endpoint, body)
        gen, first = await _first_item(
            target, endpoint, state.request_body() if state else body, meta, deadline
        )
    except asyncio.CancelledError:  # the client left: free the engine, don't log a 500
        _close(gen, release)
        _observe(target, endpoint, 499, start, account)
        raise
    except BaseException as exc:
        _close(gen, release)
        err = _failure(exc, target, endpoint)
        _observe(target, endpoint, err.status, start, account)
        raise err from None
    if isinstance(first, dict):
        _close(gen, release)
        status = status_of(first) if "error" in first else 200
        if account is not None:
            account.answer(first, status)
        _observe(target, endpoint, status, start, account)
        return error_response(first, status, target.retry_after)
    metrics.observe_first_chunk(target.id, time.perf_counter() - start)
    if account is not None:
        account.first_chunk(time.perf_counter() - start)
    work = _Work(gen, release)
    response = EventStream(
        _relay(work, first, target, endpoint, meta, start, deadline, state, account),
        ping=15,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        stall_timeout_s=target.send_timeout_s,
        on_close=work.close,
    )
    # Should the response never be sent at all (the request task cancelled
    # between here and the first byte), dropping it still frees the work.
    weakref.finalize(response, work.close)
    return response


async def _first_item(
    target: Target, endpoint: Endpoint, body: Body, meta: RequestMeta, deadline: float
) -> tuple[ItemStream, Item]:
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
        gen = target.client.stream(endpoint, body, meta)
        try:
            async with asyncio.timeout_at(deadline):
                first = await gen.__anext__()
        except BaseException as exc:
            gen.cancel()
            if pause is None or not isinstance(exc, Exception) or not _unavailable(exc):
                raise
            logger.warning("%s.%s: replica unavailable, retrying", target.id, endpoint)
        else:
            if pause is None or not (isinstance(first, dict) and status_of(first) == 503):
                return gen, first
            gen.cancel()
            logger.warning("%s.%s: replica answered 503, retrying", target.id, endpoint)
        await asyncio.sleep(pause)
    raise AssertionError("unreachable: the last try returns or raises")


def _unavailable(exc: Exception) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    if isinstance(exc, APIError):
        return exc.status == 503
    return isinstance(exc, (RayActorError, ActorDiedError, ActorUnavailableError))


class _Work:
    """What a stream holds: its call (replaced when it resumes) and its admission slot.

    ``close`` is idempotent and runs at least once however the stream ends: from
    the relay's own cleanup, from the response's close hook (which runs even when
    the relay never started), or when the response object is dropped unsent.
    """

    __slots__ = ("gen", "release", "__weakref__")

    def __init__(self, gen: ItemStream, release: Release):
        self.gen: ItemStream | None = gen
        self.release = release

    def close(self) -> None:
        gen, self.gen = self.gen, None
        if gen is not None:
            gen.cancel()
        self.release()


async def _relay(
    work: _Work,
    first: Item,
    target: Target,
    endpoint: Endpoint,
    meta: RequestMeta,
    start: float,
    deadline: float,
    state: StreamState | None = None,
    account: Account | None = None,
) -> AsyncIterator[bytes]:
    gen = work.gen
    assert gen is not None
    status = 200
    out: Callable[[str], bytes] = state.relay if state is not None else str.encode
    timer = StreamDeadline(deadline)  # times the waits for chunks, never the writer
    try:
        data = out(first)  # type: ignore[arg-type]  # a stream's items are SSE events
        if account is None or account.event(data):
            yield data
        while True:
            try:
                event = await timer.next(gen)
            except StopAsyncIteration:
                break
            except Exception as exc:
                if state is None or not _unavailable(exc) or not state.can_resume():
                    raise
                gen.cancel()
                gen, event = await _continue(target, state, meta, deadline)
                work.gen = gen
                out = state.relay_continued
            data = out(event)
            if account is None or account.event(data):  # not: a usage chunk nobody asked for
                yield data
    except asyncio.CancelledError:
        status = 499  # client went away; cancelling gen aborts the engine request
        raise
    except Exception as exc:  # mid-stream: an SSE error event, then [DONE]
        err = _failure(exc, target, endpoint)
        status = err.status
        yield sse.data(err.body())
        yield sse.DONE
    finally:
        timer.close()
        work.close()
        _observe(target, endpoint, status, start, account)


async def _continue(
    target: Target, state: StreamState, meta: RequestMeta, deadline: float
) -> tuple[ItemStream, Item]:
    """The rest of a stream whose replica died, from another replica (see resume.py)."""
    logger.warning(
        "%s: replica died mid-stream after %d tokens; continuing on another replica",
        target.id,
        len(state.token_ids),
    )
    try:
        gen, first = await _first_item(
            target, Endpoint.COMPLETIONS, state.continuation(), meta, deadline
        )
    except BaseException:
        metrics.STREAM_RESUMPTIONS.labels(target.id, "failed").inc()
        raise
    if isinstance(first, dict):  # refused (e.g. 503 again): end the stream with that error
        gen.cancel()
        metrics.STREAM_RESUMPTIONS.labels(target.id, "failed").inc()
        raise APIError(status_of(first), first.get("error", {}).get("message", "unavailable"))
    metrics.STREAM_RESUMPTIONS.labels(target.id, "resumed").inc()
    return gen, first


def _failure(exc: BaseException, target: Target, endpoint: Endpoint) -> APIError:
    if isinstance(exc, StopAsyncIteration):
        logger.error("%s.%s answered nothing", target.id, endpoint)
        return APIError(500, "internal server error")
    if isinstance(exc, TimeoutError):
        return timed_out(target.id, target.timeout_s)
    if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours to map
        raise exc
    return from_exception(exc, target.id, logger)


def _observe(
    target: Target, endpoint: Endpoint, status: int, start: float, account: Account | None
) -> None:
    metrics.observe_request(target.id, endpoint, status, time.perf_counter() - start)
    if account is not None:
        account.end(status)


def _nothing() -> None:
    pass


def _close(gen: ItemStream | None, release: Release) -> None:
    if gen is not None:
        gen.cancel()
    release()
