"""Config swaps under steady streaming load: `llmserve deploy NEW.yaml` against the running app.

Models that stay answer every request through every swap. An added model is
listed only once it answers; a removed one is 404 afterwards. Each swap's
duration (the deploy command, start to healthy) is printed.

The deploys run ``llmserve deploy``'s own code (``cli.main``) in this process
rather than in a new one: a new process spends minutes importing vLLM (for
config validation) on 2 cores whose engines are busy, which would time the
import, not the swap.

Not covered here: a pipeline's ``top_k`` (this app has no RAG stages; an
embedder engine next to the three here would not fit 2 cores).
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from pathlib import Path

import httpx
import pytest
import yaml

from llmserve.config import validate_config_dict
from tests.faults.conftest import MODEL, FaultApp
from tests.traffic import Traffic, ok, summary

SWAP_LIMIT_S = 600


def _deploy(app: FaultApp, config: dict, path: Path) -> float:
    """``llmserve deploy CONFIG --address GCS`` of ``config``; the seconds it took."""
    from llmserve.cli import main

    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    code = main(["deploy", str(path), "--address", app.gcs_address, "--timeout", str(SWAP_LIMIT_S)])
    assert code == 0, f"llmserve deploy exited {code}; see {app.log}"
    return time.monotonic() - started


@pytest.fixture
def connected():
    """This process as a driver of the app's cluster, disconnected (and its environment
    restored) afterwards."""
    import ray

    saved = dict(os.environ)
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


async def _listed_only_when_answering(url: str, model: str, stop: asyncio.Event) -> list[int]:
    """Poll /v1/models; the moment ``model`` is listed, ask it. Statuses of those asks."""
    asked: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set() and not asked:
            try:
                listed = {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
            except (httpx.HTTPError, ValueError, KeyError):
                listed = set()
            if model in listed:
                r = await client.post(
                    "/v1/completions",
                    json={"model": model, "prompt": "Hello", "max_tokens": 4},
                )
                asked.append(r.status_code)
            await asyncio.sleep(0.5)
    return asked


def test_swaps_keep_serving_the_models_that_stay(
    fault_app: FaultApp, tmp_path: Path, connected
) -> None:
    fault_app.wait_whole({"ingress": 1, "llm-pair": 2})
    config = copy.deepcopy(fault_app.config)
    pair = next(m for m in config["models"] if m["id"] == "pair")
    # Explicit, as docs/operations.md advises for models whose replica count changes: the
    # default follows the count (on above 1), and the ingress's arguments with it.
    pair["resume_streams"] = True
    steps = []

    def engine_arg(c: dict) -> None:
        next(m for m in c["models"] if m["id"] == "pair")["engine_kwargs"]["max_model_len"] = 384

    def replicas(n: int):
        def edit(c: dict) -> None:
            next(m for m in c["models"] if m["id"] == "pair")["deployment"]["num_replicas"] = n

        return edit

    def add(c: dict) -> None:
        c["models"].append({"id": "extra", **copy.deepcopy(MODEL)})

    def remove(c: dict) -> None:
        c["models"] = [m for m in c["models"] if m["id"] != "extra"]

    steps = [
        ("pair: engine argument changed", engine_arg),
        ("pair: replicas 2 -> 1", replicas(1)),
        ("pair: replicas 1 -> 2", replicas(2)),
        ("model added", add),
        ("model removed", remove),
    ]
    assert pair["deployment"]["num_replicas"] == 2
    # `llmserve deploy` checks the config against vLLM's own argument classes. Import
    # them now, so that the first swap's time is the swap's and not vLLM's import.
    validate_config_dict(copy.deepcopy(config))

    async def scenario() -> dict:
        stop = asyncio.Event()
        # Clients that honour Retry-After on a 503, as the OpenAI SDK does: at the moment
        # HAProxy swaps ingress replicas, a request can find none (1 in 640 in one run).
        loads = [
            Traffic(fault_app.url, m, clients=1, max_tokens=32, retries=2) for m in ("tiny", "pair")
        ]
        tasks = [asyncio.create_task(t.run(stop)) for t in loads]
        seconds, listed, ingress = {}, [], {}
        for i, (name, edit) in enumerate(steps):
            ingress[name] = [p.pid for p in fault_app.replicas("ingress")]
            edit(config)
            watch = None
            if name == "model added":
                watch = asyncio.create_task(
                    _listed_only_when_answering(fault_app.url, "extra", stop)
                )
            seconds[name] = await asyncio.to_thread(
                _deploy, fault_app, config, tmp_path / f"swap-{i}.yaml"
            )
            if watch is not None:
                listed = await asyncio.wait_for(watch, 60)
        async with httpx.AsyncClient(base_url=fault_app.url, timeout=30) as client:
            removed = await client.post(
                "/v1/completions", json={"model": "extra", "prompt": "Hello", "max_tokens": 4}
            )
        stop.set()
        await asyncio.gather(*tasks)
        return {
            "seconds": seconds,
            "loads": loads,
            "listed": listed,
            "removed": removed,
            "ingress": ingress,
        }

    seen = asyncio.run(scenario())
    loads = seen["loads"]
    print("\nswaps under load (1 client per model, back to back):")
    for name, s in seen["seconds"].items():
        print(f"  {name}: deploy took {s:.0f} s")
    for t in loads:
        print(f"  {t.model}: {summary(t.outcomes)}; 503s retried: {len(t.retried)}")
    print(
        f"  'extra' asked as soon as listed -> {seen['listed']}; after removal -> "
        f"{seen['removed'].status_code}"
    )
    for t in loads:
        failed = [o for o in t.outcomes if not ok(o)]
        assert not failed, (t.model, summary(t.outcomes))
        assert len(t.outcomes) > len(steps), (t.model, summary(t.outcomes))
    # Changes to one model's deployment leave the ingress (and its fused engine)
    # running: the same replica process before each of the first three swaps
    # and after them. Adding a model changes the ingress's routes.
    ingress = seen["ingress"]
    assert ingress["pair: engine argument changed"] == ingress["model added"], ingress
    assert seen["listed"] == [200]
    assert seen["removed"].status_code == 404
    fault_app.config = config  # what runs now, for the tests after this one
