"""Calling vLLM's pooling serving classes (embeddings, scores) without HTTP.

They answer with a ready ``JSONResponse`` and raise on bad input; we turn
both into plain dicts, shaped like vLLM's own HTTP answers.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from llmserve.openai.errors import error_body, validation_error_body


@functools.cache
def _adapter(request_type: Any) -> TypeAdapter:
    # Some of vLLM's request types are unions (EmbeddingRequest), not models.
    return TypeAdapter(request_type)


async def run_pooling(serving, request_type: Any, body: dict[str, Any]) -> dict[str, Any]:
    from vllm.exceptions import VLLMValidationError

    try:
        request = _adapter(request_type).validate_python(body)
    except ValidationError as exc:
        return validation_error_body(exc)
    except VLLMValidationError as exc:  # raised by vLLM's "before" validators
        return vllm_error(exc)
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


def vllm_error(exc: Exception) -> dict[str, Any]:
    """An exception from vLLM's serving layer as vLLM's own server would report it."""
    import logging

    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    try:
        return create_error_response(exc).model_dump()
    except Exception:  # never leak a traceback to the client
        logging.getLogger("llmserve").exception("unexpected error while serving a request")
        return error_body(500, "internal server error")
