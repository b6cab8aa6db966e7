"""Calling vLLM's pooling serving classes (embeddings, scores) without HTTP.

They answer with a ready ``JSONResponse`` and raise on bad input; we turn
both into plain dicts, shaped like vLLM's own HTTP answers.

A call that is cancelled (its client left) or fails aborts all the engine
requests it started in one ``abort``. vLLM's serving class starts one engine
request per input and, when cancelled, lets each abort its own; the engine
core drops each aborted request with a pass over its whole waiting queue, so
n separate aborts cost O(n²): 100,000 abandoned documents kept a reranker's
engine busy for minutes after its client had left. One abort of all of them is
one pass. (The per-input aborts that follow find nothing left to abort.)
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from typing import Any

from llmserve.compat.vllm import pooling_engine, set_pooling_engine
from llmserve.engine.requests import parse_request, vllm_error
from llmserve.openai.errors import APIError, status_of

logger = logging.getLogger("llmserve")

_STARTED: ContextVar[list[str] | None] = ContextVar("llmserve_pooling_requests", default=None)
"""The engine request ids the pooling call running in this task has started."""


class _RecordingEngine:
    """The engine as a pooling serving object sees it: ``encode`` (which vLLM calls
    once per input, in the task of the call) notes its request id for that call."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        started = _STARTED.get()
        if started is not None:
            started.append(kwargs["request_id"])
        return self.engine.encode(*args, **kwargs)


def record_requests(serving: Any) -> None:
    """Make ``run_pooling`` on ``serving`` able to abort its engine requests at once."""
    engine = pooling_engine(serving)
    if not isinstance(engine, _RecordingEngine):
        set_pooling_engine(serving, _RecordingEngine(engine))


async def run_pooling(serving, request_type: Any, body: dict[str, Any]) -> dict[str, Any]:
    request, error = parse_request(request_type, body)
    if error is not None:
        return error
    started: list[str] = []
    token = _STARTED.set(started)
    try:
        response = await serving(request, None)
    except BaseException as exc:
        if started:
            await _abort(serving, started)
        if not isinstance(exc, Exception):  # cancelled: the client left
            raise
        return vllm_error(exc)
    finally:
        _STARTED.reset(token)
    return json.loads(response.body)


async def _abort(serving: Any, request_ids: list[str]) -> None:
    # This runs before the per-input aborts: vLLM cancelled their tasks on the way
    # up, which only scheduled them, and ``abort`` drops the requests from the
    # engine client synchronously, before its first await.
    try:
        await pooling_engine(serving).abort(request_ids)
    except Exception:  # a dead engine: nothing runs any more
        logger.warning("aborting %d pooling requests failed", len(request_ids), exc_info=True)


async def embed_texts(serving, model_id: str, texts: list[str]) -> list[list[float]]:
    """Embed texts in one call to vLLM's ``ServingEmbedding``.

    Raises ``APIError``: vLLM's own message for a bad input (e.g. one longer
    than the model's context, which it names); a generic one otherwise.
    """
    from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

    result = await run_pooling(serving, EmbeddingRequest, {"model": model_id, "input": texts})
    if "error" in result:
        status = status_of(result)
        if status < 500:
            raise APIError(status, result["error"]["message"], param="input")
        logger.error("embedding with %s failed: %s", model_id, result["error"])
        raise APIError(500, f"embedding with '{model_id}' failed")
    return [item["embedding"] for item in sorted(result["data"], key=lambda d: d["index"])]
