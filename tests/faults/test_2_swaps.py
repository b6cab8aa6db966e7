"""Config swaps with `llmserve deploy` under steady streaming load: nothing that stays fails.

Each swap is what an operator runs against a live `make run` app:
``llmserve deploy NEW.yaml --address <the app's cluster>``.
"""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import yaml

from tests.faults.conftest import MODEL, FaultApp, Traffic, ok, summary

DEPLOY_TIMEOUT_S = 600


def _deploy(app: FaultApp, config: dict, path: Path) -> float:
    path.write_text(yaml.safe_dump(config))
    llmserve = Path(sys.executable).parent / "llmserve"
    start = time.monotonic()
    result = subprocess.run(
        [str(llmserve), "deploy", str(path), "--address", app.gcs_address],
        capture_output=True,
        text=True,
        timeout=DEPLOY_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return time.monotonic() - start


def _listed(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]}


def _ask(url: str, model: str) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code


def _watch_listing(url: str, model: str, stop: threading.Event, seen: list[int]) -> None:
    """Once ``model`` is listed, ask it at once: it must answer."""
    while not stop.is_set():
        if model in _listed(url):
            seen.append(_ask(url, model))
            return
        time.sleep(0.5)


def test_swaps_under_load_fail_no_request_of_models_that_stay(fault_app: FaultApp, tmp_path):
    fault_app.wait_whole({"ingress": 1, "llm-pair": 2})  # the SIGKILLed replica is back
    url = fault_app.url
    traffic = [Traffic(url, "tiny", clients=2), Traffic(url, "pair", clients=2)]
    stop = threading.Event()

    async def load() -> None:
        await asyncio.gather(*(t.run(stop) for t in traffic))

    loader = threading.Thread(target=asyncio.run, args=(load(),))
    loader.start()
    base = fault_app.config
    pair = base["models"][1]
    extra = {"id": "extra", **MODEL}
    swaps = [
        ("engine argument changed (pair max_model_len 512 -> 384)", 384, None),
        ("replicas 2 -> 1", None, 1),
        ("replicas 1 -> 2", None, 2),
    ]
    seconds: dict[str, float] = {}
    try:
        time.sleep(3)
        config = copy.deepcopy(base)
        for name, max_len, replicas in swaps:
            model = config["models"][1]
            if max_len is not None:
                model["engine_kwargs"] = {**pair["engine_kwargs"], "max_model_len": max_len}
            if replicas is not None:
                model["deployment"] = {"num_replicas": replicas}
            seconds[name] = _deploy(fault_app, config, tmp_path / "swap.yaml")

        # A model added: listed only once it can answer.
        listing: list[int] = []
        watcher_stop = threading.Event()
        watcher = threading.Thread(
            target=_watch_listing, args=(url, "extra", watcher_stop, listing)
        )
        watcher.start()
        added = copy.deepcopy(config)
        added["models"].append(extra)
        seconds["model added"] = _deploy(fault_app, added, tmp_path / "swap.yaml")
        watcher.join(timeout=60)
        watcher_stop.set()
        assert listing == [200], listing

        # ... and removed again: 404 afterwards.
        seconds["model removed"] = _deploy(fault_app, config, tmp_path / "swap.yaml")
        assert "extra" not in _listed(url)
        assert _ask(url, "extra") == 404
        time.sleep(2)
    finally:
        stop.set()
        loader.join(timeout=180)

    for t in traffic:
        ends = sorted(o.ended for o in t.outcomes if ok(o))
        gap = max((b - a for a, b in zip(ends, ends[1:], strict=False)), default=0.0)
        print(
            f"\n{t.model}: {len(t.outcomes)} requests during the swaps -> {summary(t.outcomes)}; "
            f"longest gap between completions {gap:.1f} s"
        )
    for name, s in seconds.items():
        print(f"swap '{name}': llmserve deploy took {s:.0f} s")
    for t in traffic:
        assert t.outcomes and all(ok(o) for o in t.outcomes), summary(t.outcomes)
