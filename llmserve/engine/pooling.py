"""Calling vLLM's pooling serving classes (embeddings, scores) without HTTP.

They answer with a ready ``JSONResponse`` and raise on bad input; we turn
both into plain dicts, shaped like vLLM's own HTTP answers.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from llmserve.engine.requests import parse_request, vllm_error
from llmserve.openai.errors import APIError, status_of

logger = logging.getLogger("llmserve")


async def run_pooling(serving, request_type: Any, body: dict[str, Any]) -> dict[str, Any]:
    request, error = parse_request(request_type, body)
    if error is not None:
        return error
    try:
        response = await serving(request, None)
    except Exception as exc:
        return vllm_error(exc)
    return json.loads(response.body)


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
