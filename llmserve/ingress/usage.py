"""One request's usage: what it reserved of its tenant's tokens, what vLLM says it used,
and the tenant's metrics (``llmserve_tenant_*``).

The ingress counts tokens from the ``usage`` vLLM reports: in a JSON answer,
in the last chunk of a chat or completions stream (asked for by
``Tenant.prepare``), or in a Responses stream's ``response.completed`` event.
Only events that can hold it are parsed (a substring check per event, and only
for requests of configured tenants); every other byte is relayed untouched.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.responses import JSONResponse

from llmserve.ingress.routes import Route
from llmserve.ingress.tenants import Tenant
from llmserve.observability import metrics
from llmserve.openai import sse
from llmserve.servers.protocol import Endpoint

_USAGE = b'"usage"'
_COMPLETED = b"event: response.completed\n"


DEFAULT_COMPLETION_RESERVE = 1024
"""Completion tokens reserved for a chat or Responses request that sets no limit."""


def estimate_tokens(endpoint: Endpoint, body: dict[str, Any], body_bytes: int) -> int:
    """What a request may cost: reserved from its tenant's tokens per minute at admission,
    and settled with what vLLM reports when it ends.

    The prompt is a quarter of the body's bytes (there is no tokenizer in the
    ingress; JSON and chat markup make it an overestimate for English text).
    The completion is ``max_completion_tokens``, ``max_tokens`` or
    ``max_output_tokens`` times ``n``; without one, vLLM's default for
    completions (16), and ``DEFAULT_COMPLETION_RESERVE`` for chat and Responses
    (vLLM lets those run to the model's context length, which the ingress does
    not know without asking the engine; the settlement corrects the estimate).
    """
    prompt = -(-body_bytes // 4)
    if endpoint not in (Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES):
        return prompt
    limit = 16 if endpoint is Endpoint.COMPLETIONS else DEFAULT_COMPLETION_RESERVE
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            limit = value
            break
    n = body.get("n")
    return prompt + limit * (n if isinstance(n, int) and 0 < n <= 128 else 1)


class Account:
    """What one request of a tenant used; ``end`` settles it once, however it ended."""

    __slots__ = ("_usage", "ended", "model", "reserved", "started", "tenant", "wants_usage")

    def __init__(self, tenant: Tenant, model: str, reserved: int = 0, wants_usage: bool = True):
        self.tenant = tenant
        self.model = model
        self.reserved = reserved
        self.wants_usage = wants_usage
        self.started = False
        """An answer or a stream's first chunk came: the engine did work."""
        self.ended = False
        self._usage: tuple[int, int] | None = None

    def answer(self, answer: dict[str, Any], status: int) -> None:
        """A whole JSON answer."""
        if status == 200:
            self.started = True
            self._record(answer.get("usage"))

    def first_chunk(self, seconds: float) -> None:
        self.started = True
        metrics.TENANT_FIRST_CHUNK.labels(self.tenant.id).observe(seconds)

    def event(self, data: bytes) -> bool:
        """Read one streamed event on its way to the client; whether to send it (not: the
        usage chunk the ingress asked for and the client did not)."""
        if data.startswith(_COMPLETED):
            _, payload = sse.parse_typed_event(data.decode())
            response = payload.get("response")
            self._record(response.get("usage") if isinstance(response, dict) else None)
        elif _USAGE in data:
            chunk = sse.parse_data(data.decode())
            if chunk is not None:
                usage = chunk.get("usage")
                self._record(usage)
                if not self.wants_usage and usage and chunk.get("choices") == []:
                    return False
        return True

    def _record(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens")) or 0
        if prompt is None:  # pooling answers may report only a total
            prompt = usage.get("total_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            self._usage = (prompt, completion)

    def end(self, status: int) -> None:
        """Count the request and settle its tokens (once; later calls do nothing)."""
        if self.ended:
            return
        self.ended = True
        tenant = self.tenant
        metrics.TENANT_REQUESTS.labels(tenant.id, self.model, str(status)).inc()
        if status == 429:
            metrics.TENANT_RATE_LIMITED.labels(tenant.id, "capacity").inc()
        if self._usage is not None:
            prompt, completion = self._usage
            metrics.TENANT_TOKENS.labels(tenant.id, self.model, "prompt").inc(prompt)
            metrics.TENANT_TOKENS.labels(tenant.id, self.model, "completion").inc(completion)
        limiter = tenant.limiter
        if limiter is None:
            return
        if self._usage is not None:
            used = sum(self._usage)
        elif not self.started:
            used = 0  # refused or failed before the engine did anything
            if status in (429, 503):  # refused for capacity: it does not count
                limiter.refund_request()
        else:
            used = self.reserved  # cut off with no usage report: keep what it reserved
        limiter.settle(self.reserved, used)


def open_account(
    tenant: Tenant, route: Route, endpoint: Endpoint, body: dict[str, Any], body_bytes: int
) -> Account | JSONResponse:
    """Prepare a configured tenant's request (``Tenant.prepare``) and take it from its rate
    limits: its ``Account``, or the 429 to answer at once when a limit has no room."""
    start = time.perf_counter()
    wants_usage = tenant.prepare(endpoint, body)
    reserved = 0
    if tenant.limiter is not None:
        estimate = estimate_tokens(endpoint, body, body_bytes)
        reserved, refusal = tenant.limiter.admit(estimate)
        if refusal is not None:
            metrics.TENANT_REQUESTS.labels(tenant.id, route.id, "429").inc()
            metrics.TENANT_RATE_LIMITED.labels(tenant.id, refusal.kind).inc()
            metrics.observe_request(route.id, endpoint, 429, time.perf_counter() - start)
            return refusal.response()
    return Account(tenant, route.id, reserved, wants_usage)
