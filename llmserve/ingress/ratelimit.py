"""A tenant's rate limits: requests and tokens per minute, told to clients in OpenAI's headers.

Each limit is a bucket that refills continuously at ``limit / 60`` per second
and holds at most one minute's worth, as OpenAI's own limits behave: a tenant
may burst up to its limit, then goes at the limit's pace. A request takes one
request and its token estimate (``usage.py``) when it is admitted; the tokens
are settled with what vLLM reports when it ends, so a bucket may go below zero
for a request that used more than it reserved.

With several ingress replicas, each enforces its share, ``limit / N`` for the
N replicas Serve runs (``replicas.py``), like Envoy's local rate limit: no
shared store, no extra hop. HAProxy spreads requests over the replicas, so the
total stays within the limit when the tenant's requests spread evenly, and
below it when they do not; README (Tenants) states the slack.

Every answer to a tenant with limits carries OpenAI's six ``x-ratelimit-*``
headers (``RateLimitHeaders``), whatever its status.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from llmserve.openai.errors import error_body

Clock = Callable[[], float]

_KINDS = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}


class Bucket:
    """One limit, ``per_minute``, of which this replica enforces ``1 / replicas()``."""

    def __init__(self, per_minute: int, replicas: Callable[[], int], clock: Clock):
        self.per_minute = per_minute
        self._replicas = replicas
        self._clock = clock
        self._n = max(1, replicas())
        self.level = self.capacity
        self._at = clock()

    @property
    def capacity(self) -> float:
        """This replica's share of the limit: what its bucket holds when full."""
        return self.per_minute / self._n

    @property
    def rate(self) -> float:
        """Refill per second."""
        return self.capacity / 60

    def sync(self) -> None:
        """Refill for the time passed; rescale when the number of replicas changed."""
        now = self._clock()
        n = max(1, self._replicas())
        if n != self._n:  # keep the same fill ratio in the new share
            self.level *= self._n / n
            self._n = n
        self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
        self._at = now

    def wait_s(self, amount: float) -> float:
        """Seconds until the bucket holds ``amount`` (0: now). Call ``sync`` first."""
        return max(0.0, (amount - self.level) / self.rate)

    def remaining(self) -> int:
        """What the whole limit has left, estimated from this replica's share."""
        return max(0, min(self.per_minute, math.floor(self.level * self._n)))

    def reset_s(self) -> float:
        """Seconds until the bucket is full again (OpenAI's ``x-ratelimit-reset-*``)."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(frozen=True)
class Refusal:
    """Why a request was not admitted, and when it may be."""

    kind: str
    """``requests`` or ``tokens``: OpenAI's error ``type`` for its rate limits."""
    limit: int
    retry_after_s: float

    def response(self) -> JSONResponse:
        """OpenAI's 429, with ``Retry-After`` (whole seconds) and ``retry-after-ms`` (which
        the OpenAI SDK prefers) computed from the bucket."""
        wait = duration(self.retry_after_s)
        message = (
            f"Rate limit reached on {_KINDS[self.kind]}: Limit {self.limit}. "
            f"Please try again in {wait}."
        )
        body = error_body(429, message, type=self.kind)
        retry = {
            "Retry-After": str(max(1, math.ceil(self.retry_after_s))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000))),
        }
        return JSONResponse(body, status_code=429, headers=retry)


class RateLimiter:
    """A tenant's requests-per-minute and tokens-per-minute limits in this replica."""

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        replicas: Callable[[], int],
        clock: Clock = time.monotonic,
    ):
        self.requests = _bucket(requests_per_minute, replicas, clock)
        self.tokens = _bucket(tokens_per_minute, replicas, clock)

    def _buckets(self) -> list[Bucket]:
        return [b for b in (self.requests, self.tokens) if b is not None]

    def admit(self, tokens: int) -> tuple[int, Refusal | None]:
        """Take one request and ``tokens`` (at most a full bucket: a larger request waits for
        a full one); ``(tokens taken, None)``, or ``(0, why not)`` with nothing taken."""
        for bucket in self._buckets():
            bucket.sync()
        taken = 0
        if self.tokens is not None:
            taken = min(tokens, math.floor(self.tokens.capacity))
        wanted = (("requests", self.requests, 1), ("tokens", self.tokens, taken))
        waits = [
            Refusal(kind, bucket.per_minute, bucket.wait_s(amount))
            for kind, bucket, amount in wanted
            if bucket is not None and bucket.wait_s(amount) > 0
        ]
        if waits:
            return 0, max(waits, key=lambda r: r.retry_after_s)
        if self.requests is not None:
            self.requests.level -= 1
        if self.tokens is not None:
            self.tokens.level -= taken
        return taken, None

    def settle(self, reserved: int, used: int) -> None:
        """Give back what a request reserved but did not use (or take what it used beyond)."""
        if self.tokens is not None and used != reserved:
            self.tokens.sync()
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + reserved - used)

    def refund_request(self) -> None:
        """A request refused for capacity did no work: it does not count."""
        if self.requests is not None:
            self.requests.sync()
            self.requests.level = min(self.requests.capacity, self.requests.level + 1)

    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers, for the limits this tenant has."""
        out = {}
        for kind, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            bucket.sync()
            out[f"x-ratelimit-limit-{kind}"] = str(bucket.per_minute)
            out[f"x-ratelimit-remaining-{kind}"] = str(bucket.remaining())
            out[f"x-ratelimit-reset-{kind}"] = duration(bucket.reset_s())
        return out


def _bucket(per_minute: int | None, replicas: Callable[[], int], clock: Clock) -> Bucket | None:
    return Bucket(per_minute, replicas, clock) if per_minute else None


def duration(seconds: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*`` (Go's format): ``20ms``,
    ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    ms = math.ceil(round(seconds * 1000, 6))  # rounded first: no 51ms for 0.05 s
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
