"""Engine and replica faults under steady load: engine kills, a replica SIGKILL.

The fault suite runs its files in order against one app (see conftest.py);
each test prints what it measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter

import httpx
import psutil

from tests.faults.conftest import RECOVERY_LIMIT_S, FaultApp, engine_cores
from tests.traffic import Traffic, ok, summary


async def _probe_health(url: str, stop: asyncio.Event, seen: list[tuple[float, int]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                seen.append((time.monotonic(), (await client.get("/health")).status_code))
            await asyncio.sleep(0.5)


async def _kill_under_load(app: FaultApp, traffic: Traffic, kill, settle) -> dict:
    """Steady traffic; ``kill()`` after a few seconds; stop once ``settle(killed_at)``."""
    stop = asyncio.Event()
    health: list[tuple[float, int]] = []
    tasks = [
        asyncio.create_task(traffic.run(stop)),
        asyncio.create_task(_probe_health(app.url, stop, health)),
    ]
    await asyncio.sleep(4)
    assert any(ok(o) for o in traffic.outcomes), summary(traffic.outcomes)
    killed_at = time.monotonic()
    kill()
    while not settle(killed_at):
        assert time.monotonic() - killed_at < RECOVERY_LIMIT_S, summary(traffic.outcomes)
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks)
    return {"killed_at": killed_at, "health": health}


def _recovered(traffic: Traffic, after: float) -> bool:
    return any(ok(o) and o.started > after + 1 for o in traffic.outcomes)


def test_a_dead_fused_engine_is_503_never_500_and_is_restarted(fault_app: FaultApp) -> None:
    [replica] = fault_app.replicas("ingress")
    [core] = engine_cores(replica)
    traffic = Traffic(fault_app.url, "tiny")

    seen = asyncio.run(
        _kill_under_load(
            fault_app,
            traffic,
            kill=lambda: core.send_signal(signal.SIGKILL),
            settle=lambda t: _recovered(traffic, t),
        )
    )
    killed_at = seen["killed_at"]
    after = [o for o in traffic.outcomes if o.ended > killed_at]
    first_ok = min(o.ended for o in after if ok(o) and o.started > killed_at + 1)
    print(
        f"\nfused engine kill -9: {len(after)} requests after the kill -> {summary(after)}; "
        f"recovered {first_ok - killed_at:.1f} s after the kill"
    )
    failed = [o for o in traffic.outcomes if not ok(o)]
    assert failed, "the kill did not disturb anything"
    for o in failed:
        # 503 before any byte (with Retry-After), or a stream ended by a 503 event + [DONE].
        assert o.error_code == 503, o
        if o.status == 503:
            assert o.retry_after == "1", o
        else:
            assert o.status == 200 and o.stream and o.done, o
    assert 500 not in {o.status for o in traffic.outcomes}
    # /health: 503 while the engine restarts, 200 again afterwards; the replica is the same.
    statuses = [s for t, s in seen["health"] if t > killed_at]
    assert 503 in statuses and statuses[-1] == 200, statuses
    assert fault_app.replicas("ingress") == [replica]
    assert engine_cores(replica) and engine_cores(replica) != [core]


def test_a_dead_engine_with_two_replicas_fails_no_new_request(fault_app: FaultApp) -> None:
    replicas = fault_app.replicas("llm-pair")
    assert len(replicas) == 2
    victim = replicas[0]
    [core] = engine_cores(victim)
    traffic = Traffic(fault_app.url, "pair")
    replaced: list[float] = []

    def settle(killed_at: float) -> bool:
        # Done when a new replica with a running engine has taken the dead one's place.
        now = fault_app.replicas("llm-pair")
        if victim not in now and len(now) == 2 and all(engine_cores(r) for r in now):
            replaced.append(time.monotonic() - killed_at)
        return bool(replaced) and _recovered(traffic, killed_at + replaced[0])

    seen = asyncio.run(
        _kill_under_load(
            fault_app, traffic, kill=lambda: core.send_signal(signal.SIGKILL), settle=settle
        )
    )
    killed_at = seen["killed_at"]
    new = [o for o in traffic.outcomes if o.started > killed_at]
    running = [o for o in traffic.outcomes if o.started <= killed_at < o.ended]
    print(
        f"\ntwo replicas, one engine kill -9: {len(new)} new requests -> {summary(new)}; "
        f"{len(running)} running at the kill -> {summary(running)}; "
        f"replica replaced after {replaced[0]:.1f} s"
    )
    assert all(ok(o) for o in new), summary(new)
    for o in running:  # only a stream already running on the dead replica may fail
        assert ok(o) or (o.stream and o.status == 200 and o.error_code == 503 and o.done), o
    assert 500 not in {o.status for o in traffic.outcomes}


def _stream_text(url: str, body: dict, on_chunk=None) -> tuple[str, list[str]]:
    text, events = "", []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[len("data: ") :])
            if events[-1] != "[DONE]":
                for choice in json.loads(events[-1]).get("choices", []):
                    text += choice["delta"].get("content") or ""
            if on_chunk is not None:
                on_chunk(len(events))
    return text, events


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_a_stream_whose_replica_dies_goes_on_elsewhere_with_the_same_text(fault_app: FaultApp):
    fault_app.wait_whole({"llm-pair": 2})
    body = {
        "model": "pair",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 400,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    reference, _ = _stream_text(fault_app.url, body)
    cores = [engine_cores(r)[0] for r in fault_app.replicas("llm-pair")]
    marks: dict[int, float] = {}
    killed: list[psutil.Process] = []

    def on_chunk(n: int) -> None:
        # The engine serving this stream is the one burning CPU between chunks 5 and 25.
        if n == 5:
            marks.update({c.pid: _cpu(c) for c in cores})
        elif n == 25:
            busy = max(cores, key=lambda c: _cpu(c) - marks[c.pid])
            busy.send_signal(signal.SIGKILL)
            killed.append(busy)

    text, events = _stream_text(fault_app.url, body, on_chunk)
    resumed = _counter(fault_app.url, "llmserve_stream_resumptions_total", 'outcome="resumed"')
    print(
        f"\nstream resumption: engine killed after 25 of {len(events)} events; "
        f"{len(text)} characters, identical to an uninterrupted run: {text == reference}; "
        f"resumptions counted: {resumed:g}"
    )
    assert killed, "the stream ended before the kill"
    assert not any('"error"' in e for e in events), events[-3:]
    assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
    assert text == reference
    assert resumed >= 1


def _counter(url: str, name: str, label: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_replica_killed_outright_takes_its_engine_with_it(fault_app: FaultApp) -> None:
    replica = fault_app.replicas("llm-pair")[0]
    cores = engine_cores(replica)
    assert cores
    start = time.monotonic()
    replica.kill()  # SIGKILL: no cleanup code runs in the replica
    gone, alive = psutil.wait_procs(cores, timeout=15)
    print(
        f"\nreplica SIGKILL: {len(gone)} engine process(es) gone "
        f"{time.monotonic() - start:.1f} s later"
    )
    assert not alive, f"orphaned engine processes: {alive}"


NO_REPLICA_ANSWER_S = 5.0


def test_no_ingress_replica_is_a_503_json_at_once_and_service_resumes(fault_app: FaultApp):
    """The ingress replica (and with it the fused engine) killed outright: until its
    replacement is up, HAProxy itself answers, at once, with the ingress's own 503 (JSON,
    Retry-After), never Ray's plain-text 500 and never a request left waiting."""
    fault_app.wait_whole({"ingress": 1})
    [replica] = fault_app.replicas("ingress")
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    seen: list[tuple[float, float, int | str, httpx.Response | None]] = []
    with httpx.Client(base_url=fault_app.url, timeout=2 * NO_REPLICA_ANSWER_S) as client:
        killed_at = time.monotonic()
        replica.kill()
        while not seen or seen[-1][2] != 200:
            assert time.monotonic() - killed_at < RECOVERY_LIMIT_S, seen[-3:]
            start = time.monotonic()
            try:
                r = client.post("/v1/chat/completions", json=body)
                seen.append((start - killed_at, time.monotonic() - start, r.status_code, r))
            except httpx.HTTPError as exc:
                seen.append((start - killed_at, time.monotonic() - start, type(exc).__name__, None))
            time.sleep(0.25)
    refused = seen[:-1]
    print(
        f"\ningress replica SIGKILL: {len(refused)} requests refused "
        f"{dict(Counter(s for _, _, s, _ in refused))}, slowest answer "
        f"{max(took for _, took, _, _ in seen):.2f} s; served again "
        f"{seen[-1][0]:.1f} s after the kill"
    )
    assert refused, "the kill disturbed nothing"
    for _, took, status, r in refused:
        assert status == 503 and r is not None, (status, took)
        assert r.headers["content-type"] == "application/json", r.text
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == 503
        assert took < NO_REPLICA_ANSWER_S, took
    assert fault_app.replicas("ingress") != [replica]
