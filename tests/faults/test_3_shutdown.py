"""Last in the fault suite: SIGTERM stops the app after its streams finish; a forced stop
(SIGKILL of the process group) of another app leaves nothing behind either."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import httpx
import psutil

from tests.faults.conftest import (
    GRACEFUL_S,
    FaultApp,
    base_config,
    healthy,
    start_app,
    stop_app,
)
from tests.helpers import free_port
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
    _assert_free(fault_app.config["ingress"]["port"])


def _assert_free(port: int) -> None:
    """What `llmserve run` on the same port needs (HAProxy binds with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def _with_arg(arg: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if arg in (p.info["cmdline"] or ()):
            found.append(p)
    return found


FORCED_STOP_S = 30


def test_a_forced_stop_leaves_no_process_and_frees_the_port(tmp_path) -> None:
    """What a supervisor does when a stop is slow (or a second Ctrl-C): SIGKILL to
    `llmserve run`'s whole process group. Nothing of the app may outlive it; HAProxy,
    in a process group of its own, once kept the port and answered 500 to everyone.

    The fault app is stopped gracefully above, so this starts a second app, with the
    fused model only."""
    config = base_config(free_port())
    config["models"] = config["models"][:1]
    app = start_app(tmp_path, config)
    everything = [p for p in app.processes() if p.is_running()]
    haproxy_config: str | None = None
    try:
        haproxies = [p for p in everything if p.name() == "haproxy"]
        assert haproxies, [p.name() for p in everything]
        cmdline = haproxies[0].cmdline()
        haproxy_config = cmdline[cmdline.index("-f") + 1]
        assert healthy(app.url)
        killed_at = time.monotonic()
        os.killpg(app.proc.pid, signal.SIGKILL)
        app.proc.wait(timeout=10)
        _, left = psutil.wait_procs(everything, timeout=FORCED_STOP_S)
        gone = time.monotonic() - killed_at
        port = config["ingress"]["port"]
        print(
            f"\nSIGKILL of the process group: {len(everything) - len(left)} of "
            f"{len(everything)} processes ({len(haproxies)} HAProxy) gone after {gone:.1f} s"
        )
        assert not left, [(p.pid, p.name()) for p in left]
        assert not [p.pid for p in _with_arg(haproxy_config)], "an HAProxy started since"
        _assert_free(port)
    finally:
        stop_app(app, everything + (_with_arg(haproxy_config) if haproxy_config else []))
