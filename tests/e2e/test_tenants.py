"""Tenants end to end, on one small app: the tiny model fused into one ingress replica, its
engine scheduling by priority, with a gate of 4 running + 4 queued, and three tenants:

- ``limited``: 60 requests and 20,000 tokens a minute;
- ``interactive``: high priority, its prompts isolated in the prefix cache;
- ``batch``: low priority, isolated too.

The rate limit's accuracy with one ingress replica is measured here, with two in
tests/e2e/test_metrics.py (which runs two ingress replicas).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmserve.config import validate_config_dict
from tests.helpers import free_port, load_script, running_app

MODEL = "tiny"
KEYS = {"limited": "key-limited", "interactive": "key-interactive", "batch": "key-batch"}
ANON = "key-anon"
LIMITS = {"max_ongoing_requests": 4, "max_queued_requests": 4}
RPM = 60


@pytest.fixture(scope="module")
def app():
    config = validate_config_dict(
        {
            "ingress": {
                "port": free_port(),
                "fused_model": MODEL,
                "request_timeout_s": 120,
                "priority_aging_s": 2,
                "api_keys": [ANON],
                "tenants": [
                    {
                        "id": "limited",
                        "api_key": KEYS["limited"],
                        "requests_per_minute": RPM,
                        "tokens_per_minute": 20_000,
                    },
                    {
                        "id": "interactive",
                        "api_key": KEYS["interactive"],
                        "priority": "high",
                        "cache_isolation": True,
                    },
                    {
                        "id": "batch",
                        "api_key": KEYS["batch"],
                        "priority": "low",
                        "cache_isolation": True,
                    },
                ],
            },
            "models": [
                {
                    "id": MODEL,
                    "source": "builtin:tiny-llama",
                    "device": "cpu",
                    "engine_kwargs": {
                        "dtype": "float32",
                        "enforce_eager": True,
                        "max_model_len": 1024,
                        "scheduling_policy": "priority",
                        "enable_prefix_caching": True,
                    },
                    "deployment": LIMITS,
                }
            ],
        }
    )
    with running_app(config) as url:
        yield url


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _counter(url: str, name: str) -> float:
    """A counter's value summed over its series, from the app's /metrics."""
    text = httpx.get(f"{url}/metrics", headers=_auth(ANON), timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def test_the_rate_limit_holds_and_the_openai_sdk_waits_it_out(app) -> None:
    """Tokenize calls as fast as one client can send them for 10 s: a full minute's worth,
    then one a second, and the headers say so; then the real SDK retries its way through."""
    window_s = 10.0
    statuses: list[int] = []
    last = None
    with httpx.Client(base_url=app, headers=_auth(KEYS["limited"]), timeout=30) as client:
        start = time.monotonic()
        while time.monotonic() - start < window_s:
            last = client.post("/tokenize", json={"model": MODEL, "prompt": "hi"})
            statuses.append(last.status_code)
        elapsed = time.monotonic() - start
    admitted = statuses.count(200)
    allowed = RPM + RPM / 60 * elapsed  # the bucket, plus its refill over the window
    print(
        f"\n1 ingress replica: {len(statuses)} sent in {elapsed:.1f} s, {admitted} admitted, "
        f"{statuses.count(429)} refused; the limit allows {allowed:.1f}"
    )
    assert set(statuses) == {200, 429}
    assert allowed - 2 <= admitted <= allowed + 1
    assert last is not None and last.status_code == 429
    assert last.headers["x-ratelimit-limit-requests"] == str(RPM)
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    assert last.json()["error"]["type"] == "requests"

    # Empty the bucket so that the next request is at least 0.3 s away; the SDK is then
    # refused, waits retry-after-ms, and gets through.
    with httpx.Client(base_url=app, headers=_auth(KEYS["limited"]), timeout=30) as client:
        while True:
            response = client.post("/tokenize", json={"model": MODEL, "prompt": "hi"})
            if response.status_code == 429 and int(response.headers["retry-after-ms"]) >= 300:
                break
            if response.status_code == 429:
                time.sleep(int(response.headers["retry-after-ms"]) / 1000)
    seen: list[httpx.Response] = []
    http = httpx.Client(event_hooks={"response": [seen.append]}, timeout=60)
    sdk = openai.OpenAI(base_url=f"{app}/v1", api_key=KEYS["limited"], http_client=http)
    with http:
        start = time.monotonic()
        answer = sdk.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        waited = time.monotonic() - start
    assert [r.status_code for r in seen] == [429, 200]
    assert waited >= int(seen[0].headers["retry-after-ms"]) / 1000 - 0.05
    assert int(answer.headers["x-ratelimit-remaining-tokens"]) < 20_000


def test_a_model_the_tenant_may_not_call_and_the_headers_of_an_unlimited_one(app) -> None:
    response = httpx.post(
        f"{app}/v1/chat/completions",
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        headers=_auth(KEYS["interactive"]),
        timeout=30,
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "x-ratelimit-limit-requests" not in response.headers


LONG_PROMPT = " ".join(f"Fact {i}: the lighthouse keeper counted {i} ships." for i in range(40))


def _complete(url: str, key: str, prompt: str) -> None:
    response = httpx.post(
        f"{url}/v1/completions",
        json={"model": MODEL, "prompt": prompt, "max_tokens": 1, "temperature": 0},
        headers=_auth(key),
        timeout=60,
    )
    assert response.status_code == 200, response.text


def test_isolated_tenants_never_share_the_prefix_cache(app) -> None:
    """The same long prompt: a prefix-cache hit within a tenant, none across tenants
    (vLLM's own counter of prompt tokens found in its prefix cache)."""

    def hits() -> float:
        return _counter(app, "vllm:prefix_cache_hits_total")

    steps = [
        ("interactive", KEYS["interactive"]),  # first time: nothing cached
        ("interactive again", KEYS["interactive"]),  # its own prefix: a hit
        ("batch", KEYS["batch"]),  # another isolated tenant: no hit
        ("batch again", KEYS["batch"]),  # its own: a hit
        ("anonymous", ANON),  # no salt: no hit on either tenant's blocks
        ("anonymous again", ANON),
    ]
    found = {}
    for name, key in steps:
        before = hits()
        _complete(app, key, LONG_PROMPT)
        found[name] = hits() - before
    print(f"\nprefix-cache hits (tokens) per request of the same prompt: {found}")
    assert found["interactive"] == found["batch"] == found["anonymous"] == 0
    assert found["interactive again"] > 100
    assert found["batch again"] > 100
    assert found["anonymous again"] > 100


def test_high_priority_keeps_its_service_at_three_times_capacity(app) -> None:
    """6 high and 6 low clients, each sending streamed chat back to back for 20 s (a low
    client refused waits its Retry-After, as the SDK does): 12 at once against a model that
    runs 4 (3x) and queues 4 more."""
    tenant_load = load_script("tenant_load")
    loads = [
        tenant_load.TenantLoad("interactive", KEYS["interactive"], 6),
        tenant_load.TenantLoad("batch", KEYS["batch"], 6),
    ]
    rejected = _counter(app, "llmserve_tenant_rate_limited_total")
    outcomes = asyncio.run(tenant_load.replay(app, MODEL, loads, duration_s=20, max_tokens=16))
    print("\n" + tenant_load.table(outcomes))
    high, low = outcomes["interactive"], outcomes["batch"]
    assert {s for o in (high, low) for s in o.statuses} <= {200, 429}
    assert high.count(200) >= 0.95 * len(high.statuses)
    assert low.count(429) > 0
    assert low.count(429) >= 9 * high.count(429)  # low absorbs the 429s
    assert statistics.median(high.ttft_s) < statistics.median(low.ttft_s)
    assert low.count(200) > 0  # delayed, never starved
    # the ingress counted every refusal as capacity (no limits on these tenants)
    refused = _counter(app, "llmserve_tenant_rate_limited_total") - rejected
    assert refused == high.count(429) + low.count(429)
