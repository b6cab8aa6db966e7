"""``/metrics`` with several replicas: every replica's series once, told apart by ``replica``.

One real app for the module: two ingress replicas in front of a tiny random Llama
with two replicas of its own (not fused, so its ``vllm:*`` series come from the LLM
server replicas). After N requests, each counter summed over replicas is N, in
every scrape, whichever ingress replica answers it (vLLM's own counters hold one
more per engine: the 1-token warm-up request each LLM server sends its engine when
it starts, ``LLMServer._warm_up``).

The app's two ingress replicas also share a tenant's rate limit (docs/tenants.md);
its accuracy is measured here, on ``/tokenize`` so as not to touch the counts above.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmserve.config import validate_config_dict
from tests.helpers import free_port, running_app

N = 12
MODEL = "tiny"
INGRESS, LLM = "ingress", f"llm-{MODEL}"
AUTH = {"Authorization": "Bearer anon"}
LIMITED = {"Authorization": "Bearer limited-key"}
RPM = 60


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = validate_config_dict(
        {
            "ingress": {
                "port": free_port(),
                "deployment": {"num_replicas": 2},
                "api_keys": ["anon"],
                "tenants": [
                    {"id": "limited", "api_key": "limited-key", "requests_per_minute": RPM}
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
                        "max_model_len": 512,
                    },
                    "deployment": {"num_replicas": 2},
                }
            ],
        }
    )
    with running_app(config) as url:
        yield url


@pytest.fixture(scope="module")
def replicas(app) -> dict[str, set[str]]:
    """Serve's replica ids per deployment, from the replica actors' names."""
    import ray

    out: dict[str, set[str]] = {INGRESS: set(), LLM: set()}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if name.startswith("SERVE_REPLICA::"):
            _, deployment, replica = name.removeprefix("SERVE_REPLICA::").split("#")
            out.setdefault(deployment, set()).add(replica)
    assert len(out[INGRESS]) == len(out[LLM]) == 2, out
    return out


@pytest.fixture(scope="module")
def answered(app) -> int:
    """N chat requests, all at once so that both replicas of each deployment get some."""

    async def send() -> list[int]:
        async with httpx.AsyncClient(base_url=app, timeout=120, headers=AUTH) as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
            responses = await asyncio.gather(
                *(
                    client.post("/v1/chat/completions", json=body | {"max_tokens": 4})
                    for _ in range(N)
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(send()) == [200] * N
    return N


def scrape(url: str) -> dict[str, list]:
    """Samples of one /metrics answer, by sample name."""
    response = httpx.get(f"{url}/metrics", timeout=30, headers=AUTH)
    assert response.status_code == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def by_replica(samples: list, **labels: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in samples:
        if all(s.labels.get(k) == v for k, v in labels.items()):
            out[s.labels["replica"]] = out.get(s.labels["replica"], 0.0) + s.value
    return out


def finished_by_replica(url: str) -> dict[str, float]:
    return by_replica(scrape(url)["vllm:request_success_total"], model_name=MODEL)


def test_every_replica_of_every_deployment_is_in_one_scrape(app, replicas):
    samples = scrape(app)
    # a series every Python process exports: one per replica, each labelled
    per_process = by_replica(samples["process_cpu_seconds_total"])
    assert set(per_process) == replicas[INGRESS] | replicas[LLM]
    assert len(samples["process_cpu_seconds_total"]) == 4
    assert "llmserve_metrics_scrape_errors_total" not in samples


def test_sums_over_replicas_equal_the_requests_sent(app, replicas, answered):
    # vLLM counts a request a moment after its last token is sent
    deadline = time.monotonic() + 15
    warm_ups = len(replicas[LLM])  # one per engine start
    while (
        sum(finished_by_replica(app).values()) < answered + warm_ups and time.monotonic() < deadline
    ):
        time.sleep(0.2)

    # several scrapes, answered by either ingress replica: always the same totals
    for _ in range(4):
        samples = scrape(app)
        finished = by_replica(samples["vllm:request_success_total"], model_name=MODEL)
        served = by_replica(
            samples["llmserve_requests_total"], model=MODEL, endpoint="chat", status="200"
        )
        assert set(finished) == replicas[LLM], finished
        assert set(served) == replicas[INGRESS], served
        assert sum(finished.values()) == answered + warm_ups, finished
        assert all(count >= 1 for count in finished.values()), finished
        assert sum(served.values()) == answered, served
    print(f"\nvllm:request_success_total by replica: {finished}")
    print(f"llmserve_requests_total by replica: {served}")


def test_a_scrape_is_quick(app):
    start = time.perf_counter()
    scrape(app)
    assert time.perf_counter() - start < 2


def test_a_tenants_rate_limit_is_shared_by_the_ingress_replicas(app) -> None:
    """Each of the two ingress replicas enforces half of the tenant's limit. Tokenize calls
    as fast as 4 clients can send them for 10 s, spread by HAProxy over both replicas:
    admitted, at most the limit plus its refill over the window (the slack README states:
    one request per replica for rounding), and close to it."""
    window_s = 10.0

    async def send() -> tuple[list[int], float]:
        statuses: list[int] = []
        end = time.monotonic() + window_s

        async def one_client(client: httpx.AsyncClient) -> None:
            while time.monotonic() < end:
                response = await client.post("/tokenize", json={"model": MODEL, "prompt": "hi"})
                statuses.append(response.status_code)

        start = time.monotonic()
        async with httpx.AsyncClient(base_url=app, timeout=30, headers=LIMITED) as client:
            await asyncio.gather(*(one_client(client) for _ in range(4)))
        return statuses, time.monotonic() - start

    statuses, elapsed = asyncio.run(send())
    admitted = statuses.count(200)
    allowed = RPM + RPM / 60 * elapsed
    print(
        f"\n2 ingress replicas: {len(statuses)} sent in {elapsed:.1f} s, {admitted} admitted, "
        f"{statuses.count(429)} refused; the limit allows {allowed:.1f}"
    )
    assert set(statuses) == {200, 429}
    assert admitted <= allowed + 2
    assert admitted >= 0.8 * allowed
