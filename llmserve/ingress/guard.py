"""The ingress's ASGI guard: API keys (and the tenant they belong to), the body size
limit, and the drain.

A plain ASGI middleware (not a FastAPI dependency) so that an oversized body
is refused while it streams in, and a draining replica refuses a request
before any route code runs.
"""

from __future__ import annotations

import json

from llmserve.ingress.drain import DrainWatch
from llmserve.ingress.tenants import TENANT_SCOPE_KEY, TenantTable
from llmserve.openai.errors import APIError


class GuardMiddleware:
    """API keys on every route but ``/health``, the request body size limit, and
    the drain: while the app stops, 503 for new requests, and a count of those in flight.

    A plain ASGI middleware so an oversized body is refused while it streams
    in, not after it has been buffered.
    """

    def __init__(
        self,
        app,
        tenants: TenantTable,
        max_body_bytes: int,
        retry_after_s: int,
        drain: DrainWatch,
    ):
        self.app = app
        self.tenants = tenants
        self.limit = max_body_bytes
        self.drain = drain
        self.retry_after = str(retry_after_s).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _route_path(scope)
        if self.drain.draining and path != "/metrics":
            error = APIError(503, "the server is shutting down; retry after Retry-After")
            return await _send_error(send, error, [(b"retry-after", self.retry_after)])
        if path == "/health":
            return await self.app(scope, receive, send)
        self.drain.inflight += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.drain.inflight -= 1

    async def _guarded(self, scope, receive, send):
        headers = dict(scope["headers"])
        tenant = self.tenants.resolve(headers.get(b"authorization", b""))
        if tenant is None:
            return await _send_error(send, APIError(401, "invalid or missing API key"))
        scope[TENANT_SCOPE_KEY] = tenant
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

    def _too_large(self) -> APIError:
        return APIError(413, f"request body exceeds {self.limit} bytes")


async def _send_error(send, exc: APIError, headers: list | None = None) -> None:
    body = json.dumps(exc.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _route_path(scope) -> str:
    """The request path below the app's mount point (Serve's route prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
