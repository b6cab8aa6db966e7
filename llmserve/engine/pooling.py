"""Calling vLLM's pooling serving classes (embeddings, scores) without HTTP.

They answer with a ready ``JSONResponse`` and raise on bad input; we turn
both into plain dicts, shaped like vLLM's own HTTP answers.
"""

from __future__ import annotations

import json
from typing import Any

from llmserve.engine.requests import parse_request, vllm_error


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
    """Embed texts in one call to vLLM's ``ServingEmbedding``; raises on error."""
    from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

    result = await run_pooling(serving, EmbeddingRequest, {"model": model_id, "input": texts})
    if "error" in result:
        raise RuntimeError(f"embedding failed: {result['error']['message']}")
    return [item["embedding"] for item in sorted(result["data"], key=lambda d: d["index"])]
