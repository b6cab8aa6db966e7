"""A pooling call whose client leaves aborts all its engine requests in one abort.

The serving object here runs vLLM's own ``PoolingBaseServing._prepare_generators``
and ``_collect_batch`` (one ``encode`` per input, merged, each aborting itself when
cancelled); the engine is a fake that keeps the requests it was given and counts the
abort calls that found any, as vLLM's engine core only hears of those.
"""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from vllm.entrypoints.pooling.base.serving import PoolingBaseServing

from llmserve.engine.pooling import record_requests, run_pooling

pytestmark = pytest.mark.unit

N = 2_000


class Engine:
    """``AsyncLLM``'s pooling side: ``encode`` holds its request until ``finish`` is set,
    and aborts it when cancelled (as ``AsyncLLM.encode`` does)."""

    def __init__(self) -> None:
        self.live: set[str] = set()
        self.aborts: list[list[str]] = []
        self.finish = asyncio.Event()

    async def encode(self, prompt: Any, pooling_params: Any, request_id: str, **_: Any) -> Any:
        self.live.add(request_id)
        try:
            await self.finish.wait()
            self.live.discard(request_id)
            yield SimpleNamespace(error=None, request_id=request_id, finished=True)
        except asyncio.CancelledError:
            await self.abort(request_id)
            raise

    async def abort(self, request_id: str | list[str], internal: bool = False) -> None:
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        found = [i for i in ids if i in self.live]
        self.live.difference_update(found)
        if found:  # vLLM sends the engine core only the ids it still had
            self.aborts.append(found)


class Serving:
    """A pooling serving object: vLLM's generator and collection steps on ``Engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine_client = engine
        self.model_config = None

    def _log_inputs(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def __call__(self, request: Any, raw_request: Any) -> Any:
        params = SimpleNamespace(verify=lambda config: None)
        inputs = [
            {"prompts": {"prompt": t}, "params": params, "lora_requests": None, "priorities": 0}
            for t in request["input"]
        ]
        ctx = SimpleNamespace(
            engine_inputs=inputs,
            raw_request=None,
            pooling_params=params,
            request_id="embd-1",
            prompt_request_ids=None,
            lora_request=None,
            result_generator=None,
            final_res_batch=None,
        )
        await PoolingBaseServing._prepare_generators(self, ctx)  # type: ignore[arg-type]
        await PoolingBaseServing._collect_batch(self, ctx)  # type: ignore[arg-type]
        ids = [r.request_id for r in ctx.final_res_batch]
        return SimpleNamespace(body=json.dumps({"data": ids}).encode())


BODY = {"input": [f"text {i}" for i in range(N)]}


async def _leave_once_queued(serving: Serving, engine: Engine) -> None:
    call = asyncio.create_task(run_pooling(serving, dict, BODY))
    while len(engine.live) < N:
        await asyncio.sleep(0.01)
    call.cancel()  # the client left: Serve cancels the replica's task
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(5):  # the per-input tasks run their own aborts
        await asyncio.sleep(0)


async def test_a_cancelled_call_aborts_all_its_engine_requests_in_one_abort() -> None:
    engine = Engine()
    serving = Serving(engine)
    record_requests(serving)
    await _leave_once_queued(serving, engine)
    assert engine.live == set()
    assert [len(ids) for ids in engine.aborts] == [N]
    assert sorted(engine.aborts[0]) == sorted(f"embd-1-{i}" for i in range(N))


async def test_without_it_each_request_aborts_itself() -> None:
    # What vLLM does on its own: one abort per input, each a pass over the engine's queue.
    engine = Engine()
    await _leave_once_queued(Serving(engine), engine)
    assert engine.live == set()
    assert [len(ids) for ids in engine.aborts] == [1] * N


async def test_a_call_that_finishes_aborts_nothing() -> None:
    engine = Engine()
    serving = Serving(engine)
    record_requests(serving)
    record_requests(serving)  # installing twice wraps once
    engine.finish.set()
    answer = await run_pooling(serving, dict, {"input": ["a", "b"]})
    assert answer == {"data": ["embd-1-0", "embd-1-1"]}
    assert engine.aborts == []
    assert serving.engine_client.engine is engine
