"""Who is calling: the tenant behind a bearer key, and what the ingress sets for it.

The guard resolves the key (a constant-time compare against every key) to a
``Tenant`` and puts it on the ASGI scope; the endpoint checks the tenant's
model access and rate limits, and, once tenants are configured, decides in
the request body what the client may not:

- ``priority`` (vLLM's request priority): a client's is removed. The tenant's
  class travels in ``RequestMeta.priority`` instead, and the LLM server turns it
  into vLLM's priority where its engine runs ``scheduling_policy: priority``
  (``servers/llm_server.py``). vLLM's priority header never reaches an engine
  (``servers/protocol.FORWARDED_HEADERS``).
- ``cache_salt``: for a tenant with ``cache_isolation``, an HMAC of its id keyed
  by its first API key, the same in every ingress replica, which no client can
  choose or compute without that key. A salt another client sends is kept
  (it only narrows that client's own sharing) but hashed into a namespace of
  its own, so it can never equal a tenant's.
- ``stream_options.include_usage`` on streamed chat and completions, so that
  the tenant's tokens are counted and settled (``usage.py``); the usage chunk
  is taken out again when the client did not ask for it.

With no ``ingress.tenants``, every caller is the anonymous tenant and nothing
of this runs: bodies and answers pass untouched, as before.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from llmserve.config import IngressConfig
from llmserve.config.keys import resolve_api_key
from llmserve.config.tenants import ANONYMOUS
from llmserve.ingress.ratelimit import RateLimiter
from llmserve.literals import Priority
from llmserve.servers.protocol import Body, Endpoint

ENGINE_ENDPOINTS = frozenset(
    {Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES, Endpoint.EMBEDDINGS, Endpoint.RERANK}
)
"""Endpoints whose body reaches an engine's scheduler and prefix cache (a pipeline's chat
and Responses bodies reach its generator's)."""

USAGE_STREAMS = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS})
"""Streams that report usage only when asked (``stream_options.include_usage``)."""

_SALT_CONTEXT = b"llmserve cache_salt v1\x00"


@dataclass(eq=False)
class Tenant:
    """A caller as this ingress replica knows it."""

    id: str
    """The metrics label; ``anonymous`` for callers that are no configured tenant."""
    priority: Priority = "normal"
    models: frozenset[str] | None = None
    """The ids it may call; None: all."""
    cache_salt: str | None = None
    limiter: RateLimiter | None = None
    accounted: bool = False
    """Tenants are configured: its usage is counted, and the ingress owns the fields above."""

    def may_call(self, target_id: str) -> bool:
        return self.models is None or target_id in self.models

    def prepare(self, endpoint: Endpoint, body: Body) -> bool:
        """Set what the ingress decides for this tenant in ``body`` (in place).

        Returns whether the client wants the answer's usage (False only for a stream
        that asks for none: its usage chunk, requested here, is taken out again).
        """
        if not self.accounted:
            return True
        if endpoint in ENGINE_ENDPOINTS:
            body.pop("priority", None)
            if self.cache_salt is not None:
                body["cache_salt"] = self.cache_salt
            elif isinstance(salt := body.get("cache_salt"), str) and salt:
                body["cache_salt"] = "client-" + hashlib.sha256(salt.encode()).hexdigest()
        if endpoint not in USAGE_STREAMS or body.get("stream") is not True:
            return True
        options = body.get("stream_options")
        if options is None:
            options = {}
        if not isinstance(options, dict):
            return True  # vLLM refuses it, with its own message
        if options.get("include_usage"):
            return True
        body["stream_options"] = {**options, "include_usage": True}
        return False


def cache_salt(tenant_id: str, first_key: str) -> str:
    """The tenant's ``cache_salt``: 64 hex digits that only its key can produce."""
    digest = hmac.new(first_key.encode(), _SALT_CONTEXT + tenant_id.encode(), hashlib.sha256)
    return digest.hexdigest()


class TenantTable:
    """Every accepted key and its tenant; built once per ingress replica."""

    def __init__(self, keyed: list[tuple[str, Tenant]], anonymous: Tenant):
        self._keyed = [(key.encode(), tenant) for key, tenant in keyed]
        self.anonymous = anonymous

    @classmethod
    def from_keys(cls, api_keys: list[str]) -> TenantTable:
        """No tenants: every key (if any) is the anonymous caller, and nothing is counted."""
        anonymous = Tenant(ANONYMOUS)
        return cls([(key, anonymous) for key in api_keys], anonymous)

    @classmethod
    def build(
        cls, config: IngressConfig, api_keys: list[str], replicas: Callable[[], int]
    ) -> TenantTable:
        """The tenants of ``config``, their keys read here (inside the replica);
        ``api_keys`` are the resolved anonymous keys."""
        if not config.tenants:
            return cls.from_keys(api_keys)
        anonymous = Tenant(ANONYMOUS, accounted=True)
        keyed = [(key, anonymous) for key in api_keys]
        for cfg in config.tenants:
            keys = [resolve_api_key(key) for key in cfg.bearer_keys()]
            limited = cfg.requests_per_minute or cfg.tokens_per_minute
            tenant = Tenant(
                cfg.id,
                priority=cfg.priority,
                models=frozenset(cfg.models) if cfg.models is not None else None,
                cache_salt=cache_salt(cfg.id, keys[0]) if cfg.cache_isolation else None,
                limiter=(
                    RateLimiter(cfg.requests_per_minute, cfg.tokens_per_minute, replicas)
                    if limited
                    else None
                ),
                accounted=True,
            )
            keyed += [(key, tenant) for key in keys]
        seen: set[str] = set()
        for key, _ in keyed:  # the config cannot see what {env: NAME} keys hold
            if key in seen:
                raise ValueError("two callers in ingress.api_keys/tenants have the same key")
            seen.add(key)
        return cls(keyed, anonymous)

    def resolve(self, authorization: bytes) -> Tenant | None:
        """The caller of an ``Authorization`` header; None for a missing or unknown key.

        Every key is compared, in constant time, whichever matches."""
        if not self._keyed:
            return self.anonymous
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        token = token.strip()
        found = None
        for key, tenant in self._keyed:
            if hmac.compare_digest(token, key) and found is None:
                found = tenant
        return found


TENANT_SCOPE_KEY = "llmserve.tenant"
"""Where the guard puts the caller's ``Tenant`` in the ASGI scope."""


class RateLimitHeaders:
    """ASGI middleware: OpenAI's ``x-ratelimit-*`` headers on every answer to a tenant with
    limits, as its buckets stand when the answer starts (after its own request was taken)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        tenant = scope.get(TENANT_SCOPE_KEY) if scope["type"] == "http" else None
        limiter = tenant.limiter if isinstance(tenant, Tenant) else None
        if limiter is None:
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [
                    (name.encode(), value.encode())
                    for name, value in limiter.headers().items()
                    if name.encode() not in names
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
