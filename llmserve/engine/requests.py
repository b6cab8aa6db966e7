"""Validating request bodies against vLLM's request models, and vLLM's error answers.

Both the generative and the pooling paths parse a JSON body into one of
vLLM's request types; a bad body becomes the 400 vLLM's own server sends.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from llmserve.compat.vllm import error_response_body
from llmserve.openai.errors import error_body, validation_error_body


@functools.cache
def _adapter(request_type: Any) -> TypeAdapter:
    # Some of vLLM's request types are unions (EmbeddingRequest), not models.
    return TypeAdapter(request_type)


def parse_request(request_type: Any, body: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """``(request, None)``, or ``(None, error body)`` when the body is invalid."""
    from vllm.exceptions import VLLMValidationError

    try:
        return _adapter(request_type).validate_python(body), None
    except ValidationError as exc:
        return None, validation_error_body(exc)
    except VLLMValidationError as exc:  # raised by vLLM's "before" validators
        return None, vllm_error(exc)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # vLLM's "before" validators assume the JSON types they expect (e.g.
        # iterate ``messages``); a body of the wrong shape trips them.
        logging.getLogger("llmserve").info("malformed request body: %r", exc)
        return None, error_body(400, "the request body does not match this endpoint's schema")


def vllm_error(exc: Exception) -> dict[str, Any]:
    """An exception from vLLM's serving layer as vLLM's own server would report it."""
    try:
        return error_response_body(exc)
    except Exception:  # never leak a traceback to the client
        logging.getLogger("llmserve").exception("unexpected error while serving a request")
        return error_body(500, "internal server error")


def raw_request(headers: Mapping[str, str]) -> Any:
    """The ``raw_request`` vLLM's serving methods take, carrying only ``headers``.

    vLLM reads its request id (``X-Request-Id``) and tracing context from it;
    None (what vLLM's batch runner passes) when there is nothing to carry.
    """
    if not headers:
        return None
    from starlette.requests import Request

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
    }
    return Request(scope)
