"""The prefix-aware router on a real 2-replica deployment (``pair``), before the faults.

Requests that share a long prefix land on one replica while loads are balanced,
and vLLM's own prefix-cache counters on that replica show the hits; different
prefixes spread over both replicas; a burst of one prefix spills onto the
other replica instead of queueing on one.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.conftest import FaultApp

MODEL, DEPLOYMENT = "pair", "llm-pair"


def document(n: int) -> str:
    """900 characters; with the chat template and a question about 340 tokens of the tiny
    model's tokenizer (its max_model_len is 512): two full 128-token KV blocks."""
    return f"Document {n}: " + " ".join(
        f"part {n}-{i} covers topic {chr(97 + (i * n) % 26)}" for i in range(36)
    )


def scrape(url: str) -> dict[str, dict[str, float]]:
    """Per replica: requests finished, prefix-cache hits and queries (tokens) of ``pair``;
    and the router's decisions by reason under the key ``decisions``."""
    out: dict[str, dict[str, float]] = {"decisions": {}}
    names = {
        "vllm:request_success_total": "finished",
        "vllm:prefix_cache_hits_total": "hits",
        "vllm:prefix_cache_queries_total": "queries",
    }
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in names and s.labels.get("model_name") == MODEL:
                counts = out.setdefault(s.labels["replica"], {})
                counts[names[s.name]] = counts.get(names[s.name], 0.0) + s.value
            elif (
                s.name == "llmserve_routing_decisions_total"
                and s.labels.get("deployment") == DEPLOYMENT
            ):
                reasons = out["decisions"]
                reasons[s.labels["reason"]] = reasons.get(s.labels["reason"], 0.0) + s.value
    return out


def finished(counts: dict) -> dict[str, float]:
    return {r: c.get("finished", 0.0) for r, c in counts.items() if r != "decisions"}


def ask(url: str, doc: int, question: str, max_tokens: int = 2) -> str:
    """One chat request; the replica that finished it (by vLLM's own counter)."""
    before = finished(scrape(url))
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": document(doc)},
            {"role": "user", "content": question},
        ],
        "max_tokens": max_tokens,
    }
    assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 200
    deadline = time.monotonic() + 15  # vLLM counts a request a moment after its last token
    while time.monotonic() < deadline:
        grew = [r for r, n in finished(scrape(url)).items() if n > before.get(r, 0.0)]
        if grew:
            [replica] = grew
            return replica
        time.sleep(0.2)
    raise AssertionError("no replica counted the request")


def test_the_same_prefix_lands_on_the_same_replica_while_loads_are_balanced(
    fault_app: FaultApp,
) -> None:
    fault_app.wait_whole({DEPLOYMENT: 2})
    start = scrape(fault_app.url)
    homes: dict[int, list[str]] = {}
    for doc in range(4):  # one request at a time: loads stay balanced
        questions = [f"What does part {doc}-{q} cover?" for q in range(3)]
        homes[doc] = [ask(fault_app.url, doc, question) for question in questions]
    end = scrape(fault_app.url)
    decisions = {r: n - start["decisions"].get(r, 0) for r, n in end["decisions"].items()}
    hits = {
        r: (end[r]["hits"] - start.get(r, {}).get("hits", 0.0))
        / max(1.0, end[r]["queries"] - start.get(r, {}).get("queries", 0.0))
        for r in finished(end)
    }
    print(f"\nprefix routing: homes {homes}; decisions {decisions}; hit rate per replica {hits}")
    assert all(len(set(replicas)) == 1 for replicas in homes.values()), homes
    assert len({replicas[0] for replicas in homes.values()}) == 2, homes  # spread over both
    assert decisions.get("new") == 4 and decisions.get("prefix") == 8, decisions
    # two of each document's three requests reuse its cached blocks
    assert all(rate > 0.4 for rate in hits.values()), hits


def test_a_burst_of_one_prefix_spills_onto_the_other_replica(fault_app: FaultApp) -> None:
    home = ask(fault_app.url, 9, "First question?")
    before = finished(scrape(fault_app.url))

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=fault_app.url, timeout=60) as client:
            bodies = [
                {
                    "model": MODEL,
                    "messages": [
                        {"role": "system", "content": document(9)},
                        {"role": "user", "content": f"Question {i}?"},
                    ],
                    # long enough that the burst's requests overlap on the replica
                    # even when a busy machine lets them in one by one
                    "max_tokens": 150,  # with the ~340-token prompt, within max_model_len 512
                    "ignore_eos": True,
                }
                for i in range(10)
            ]
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=b) for b in bodies)
            )
        return [a.status_code for a in answers]

    assert asyncio.run(burst()) == [200] * 10
    time.sleep(2)
    grown = {r: n - before.get(r, 0.0) for r, n in finished(scrape(fault_app.url)).items()}
    print(f"\nburst of one prefix (imbalance_threshold 2): requests per replica {grown}")
    others = sum(n for r, n in grown.items() if r != home)
    assert others >= 1 and grown[home] >= 3, grown
