"""Last in the fault suite: SIGTERM stops the app after its streams finish."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import psutil

from tests.faults.conftest import GRACEFUL_S, FaultApp
from tests.traffic import Traffic, ok, summary


def test_sigterm_drains_streams_then_leaves_no_process(fault_app: FaultApp) -> None:
    fault_app.wait_whole({"ingress": 1})  # whatever the tests before left
    before = [p for p in fault_app.processes() if p.is_running()]
    traffic = Traffic(fault_app.url, "tiny", clients=4, max_tokens=200)

    async def scenario() -> dict:
        async with httpx.AsyncClient(base_url=fault_app.url, timeout=120) as client:
            streams = [asyncio.create_task(traffic._one(client, stream=True)) for _ in range(4)]
            await asyncio.sleep(2)
            term = time.monotonic()
            fault_app.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(1)
            try:
                late = await client.post(
                    "/v1/chat/completions",
                    json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
                )
                refused = (late.status_code, late.headers.get("retry-after"))
            except httpx.HTTPError as exc:
                refused = (type(exc).__name__, None)
            return {"term": term, "streams": await asyncio.gather(*streams), "late": refused}

    seen = asyncio.run(scenario())
    fault_app.proc.wait(timeout=GRACEFUL_S + 60)
    exited = time.monotonic() - seen["term"]
    # The budget: everything gone within the grace period plus 15 s.
    _, left = psutil.wait_procs(before, timeout=max(GRACEFUL_S + 15 - exited, 0.1))
    gone = time.monotonic() - seen["term"]
    streams = seen["streams"]
    print(
        f"\nSIGTERM with 4 streams in flight: {summary(streams)}, "
        f"{[o.chunks for o in streams]} chunks, finish {[o.finish_reason for o in streams]}; "
        "a new request during the drain -> "
        f"{seen['late']}; exited {exited:.1f} s after SIGTERM; "
        f"{len(before) - len(left)} of {len(before)} processes gone after {gone:.1f} s"
    )
    # Each ran to its full 200 tokens (ignore_eos): finished by length, not cut. (vLLM
    # merges deltas when the reader lags, so the chunk count can be lower than 200.)
    assert all(ok(o) and o.finish_reason == "length" for o in streams), streams
    assert seen["late"] in {(503, "1"), ("ConnectError", None)}, seen["late"]
    assert exited < GRACEFUL_S + 15
    assert not left, [(p.pid, p.name()) for p in left]
