"""A client that leaves, or a request that runs out of time, frees its engine work.

Asserted on vLLM's own counters, in a way a request that simply finished cannot
pass: each request asks for 1,900 tokens and is abandoned after a few, so

- the running gauge falls back to 0 within 5 s (finishing would take far longer),
- no request finished in the engine (vLLM's ``request_success`` counter, which
  counts every reason the *engine* ends a request, stays put), and
- the tokens generated stay far below what finishing would have produced.

(vLLM 0.32 does not count a frontend abort under ``finished_reason="abort"``:
``OutputProcessor.abort_requests`` drops the request without recording stats.)
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.helpers import vllm_counters
from tests.load.conftest import LIMITS, REMOTE_TIMEOUT_S

STORM = 50
LONG = {"max_tokens": 1900, "ignore_eos": True}  # far longer than the tests wait
QUESTION = [{"role": "user", "content": "Tell me a long story."}]


def _counters(url: str, model: str) -> dict[str, float]:
    return vllm_counters(httpx.get(f"{url}/metrics", timeout=30).text, model)


def _settled(url: str, model: str, within_s: float = 5.0) -> tuple[dict[str, float], float]:
    """The counters once nothing runs any more, and how long that took."""
    start = time.monotonic()
    while True:
        counters = _counters(url, model)
        waited = time.monotonic() - start
        if counters["running"] == 0 or waited > within_s:
            return counters, waited
        time.sleep(0.2)


async def _drop_mid_stream(client: httpx.AsyncClient, model: str, gate: asyncio.Semaphore) -> int:
    body = {"model": model, "messages": QUESTION, "stream": True, **LONG}
    async with gate, client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return response.status_code
        chunks = 0
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content"' in line:
                chunks += 1
                if chunks == 3:
                    break  # leaving the block closes the connection mid-stream
        return 200


async def _storm(url: str, model: str) -> list[int]:
    # As many at a time as the model runs, so none is refused: each must reach the engine.
    gate = asyncio.Semaphore(LIMITS["max_ongoing_requests"])
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await asyncio.gather(*(_drop_mid_stream(client, model, gate) for _ in range(STORM)))


@pytest.mark.parametrize("model", ["tiny", "tiny-remote"], ids=["fused", "handle"])
def test_dropped_streams_are_aborted_in_the_engine(load_app, model):
    before, _ = _settled(load_app.url, model)
    statuses = asyncio.run(_storm(load_app.url, model))
    after, waited = _settled(load_app.url, model)
    generated = after["generated"] - before["generated"]
    print(
        f"\n{model}: {STORM} streams dropped after 3 chunks; running 0 after {waited:.1f} s; "
        f"{generated:.0f} tokens generated (finishing: {STORM * LONG['max_tokens']})"
    )
    assert statuses == [200] * STORM
    assert after["running"] == 0
    assert after["finished"] == before["finished"]
    assert generated < STORM * 100


def test_a_request_over_its_timeout_is_504_and_aborted(load_app):
    url, model = load_app.url, "tiny-remote"
    before, _ = _settled(url, model)
    start = time.perf_counter()
    body = {"model": model, "messages": QUESTION, **LONG}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    took = time.perf_counter() - start
    assert response.status_code == 504
    err = response.json()["error"]
    assert (err["code"], err["type"]) == (504, "timeout_error")
    assert REMOTE_TIMEOUT_S <= took < REMOTE_TIMEOUT_S + 10

    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as stream:
        assert stream.status_code == 200
        data = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert json.loads(data[-2])["error"]["code"] == 504
    assert len(data) > 3  # it streamed before the deadline

    after, waited = _settled(url, model)
    print(
        f"\ntimeout: 504 after {took:.2f} s (limit {REMOTE_TIMEOUT_S} s); idle {waited:.1f} s later"
    )
    assert after["running"] == 0
    assert after["finished"] == before["finished"]
    assert after["generated"] - before["generated"] < 2 * LONG["max_tokens"]
