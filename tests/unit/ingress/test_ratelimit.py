"""RateLimiter: buckets that refill continuously, shared out over the ingress replicas,
and OpenAI's headers and 429 for them."""

from __future__ import annotations

import json

import pytest

from llmserve.ingress.ratelimit import RateLimiter, duration

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(rpm=None, tpm=None, replicas=1, clock=None):
    count = [replicas]
    clock = clock or Clock()
    return RateLimiter(rpm, tpm, lambda: count[0], clock), clock, count


def test_a_full_minute_then_the_limits_pace() -> None:
    limiter, clock, _ = _limiter(rpm=60)
    assert all(limiter.admit(0)[1] is None for _ in range(60))
    taken, refusal = limiter.admit(0)
    assert taken == 0 and refusal is not None
    assert (refusal.kind, refusal.limit) == ("requests", 60)
    assert refusal.retry_after_s == pytest.approx(1.0)  # one request per second
    clock.now += 0.5
    assert limiter.admit(0)[1].retry_after_s == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.admit(0)[1] is None
    assert limiter.admit(0)[1] is not None


def test_tokens_are_reserved_and_settled() -> None:
    limiter, clock, _ = _limiter(tpm=600)
    taken, refusal = limiter.admit(500)
    assert (taken, refusal) == (500, None)
    taken, refusal = limiter.admit(200)  # 100 left
    assert taken == 0 and refusal.kind == "tokens"
    assert refusal.retry_after_s == pytest.approx(10.0)  # 100 more at 10 per second
    limiter.settle(reserved=500, used=150)  # the answer was shorter: 350 back
    assert limiter.admit(200) == (200, None)
    # one that used more than it reserved takes the rest from the next minute
    limiter.settle(reserved=200, used=1000)
    assert limiter.tokens.level == pytest.approx(-550)
    assert limiter.headers()["x-ratelimit-remaining-tokens"] == "0"
    clock.now += 60
    limiter.tokens.sync()
    assert limiter.tokens.level == pytest.approx(50)  # refilled by 600


def test_a_request_larger_than_the_bucket_waits_for_a_full_one() -> None:
    limiter, clock, _ = _limiter(tpm=100)
    assert limiter.admit(10) == (10, None)
    taken, refusal = limiter.admit(5000)
    assert taken == 0 and refusal.retry_after_s == pytest.approx(6.0)  # 10 tokens back
    clock.now += 6
    assert limiter.admit(5000) == (100, None)


def test_nothing_is_taken_when_one_limit_refuses() -> None:
    limiter, _, _ = _limiter(rpm=10, tpm=100)
    assert limiter.admit(100) == (100, None)
    taken, refusal = limiter.admit(1)
    assert taken == 0 and refusal.kind == "tokens"
    assert limiter.requests.level == pytest.approx(9)  # its request was not taken


def test_each_replica_enforces_its_share_and_follows_the_count() -> None:
    limiter, clock, count = _limiter(rpm=60, replicas=2)
    assert sum(limiter.admit(0)[1] is None for _ in range(100)) == 30
    assert limiter.admit(0)[1].retry_after_s == pytest.approx(2.0)  # 0.5 per second here
    headers = limiter.headers()
    assert headers["x-ratelimit-limit-requests"] == "60"  # the tenant's limit, not the share
    assert headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 30  # half refilled: 15 of 30
    count[0] = 1  # the other replica went away: this one takes the whole limit
    assert limiter.headers()["x-ratelimit-remaining-requests"] == "30"
    assert sum(limiter.admit(0)[1] is None for _ in range(100)) == 30


def test_a_refused_request_can_be_refunded() -> None:
    limiter, _, _ = _limiter(rpm=1)
    assert limiter.admit(0)[1] is None
    limiter.refund_request()
    assert limiter.admit(0)[1] is None
    assert limiter.admit(0)[1] is not None


def test_openai_headers_and_formats() -> None:
    limiter, clock, _ = _limiter(rpm=600, tpm=150_000)
    limiter.admit(30_000)
    assert limiter.headers() == {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "599",
        "x-ratelimit-reset-requests": "100ms",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "120000",
        "x-ratelimit-reset-tokens": "12s",
    }
    clock.now += 0.05
    assert limiter.headers()["x-ratelimit-reset-requests"] == "50ms"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.0201, "21ms"),
        (1.0, "1s"),
        (1.5, "1.5s"),
        (7.66, "7.66s"),
        (60.0, "1m0s"),
        (360.0, "6m0s"),
        (90.25, "1m30.25s"),
        (3723.0, "1h2m3s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_the_429_is_openais_with_retry_after_from_the_bucket() -> None:
    limiter, _, _ = _limiter(rpm=120)
    for _ in range(120):
        limiter.admit(0)
    _, refusal = limiter.admit(0)
    response = refusal.response()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"  # 0.5 s, in whole seconds
    assert response.headers["retry-after-ms"] == "500"
    error = json.loads(response.body)["error"]
    assert error["type"] == "requests"
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"] == (
        "Rate limit reached on requests per min (RPM): Limit 120. Please try again in 500ms."
    )
