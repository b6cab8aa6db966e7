"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``.

We follow vLLM's own server for the shape, so a client sees the same thing
from llmserve as from a bare vLLM server: ``code`` is the HTTP status, and
errors that vLLM's serving layer produces are passed through untouched.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import ValidationError

# OpenAI's error ``type`` for the statuses llmserve produces itself.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_server_error",
    503: "service_unavailable_error",
}


class APIError(Exception):
    """An error with an HTTP status that the ingress turns into a JSON body."""

    def __init__(
        self, status: int, message: str, param: str | None = None, type: str | None = None
    ):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.param = param
        self.type = type or _TYPES.get(self.status) or HTTPStatus(self.status).phrase

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.type)

    def __reduce__(self):
        # Keeps the status and param when the error crosses a Ray handle.
        return (APIError, (self.status, self.message, self.param, self.type))


def error_body(
    status: int, message: str, param: str | None = None, type: str | None = None
) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type or _TYPES.get(status) or HTTPStatus(status).phrase,
            "param": param,
            "code": int(status),
        }
    }


def status_of(body: dict[str, Any]) -> int:
    """HTTP status of an error body (vLLM's and ours both carry it in ``code``)."""
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def validation_error_body(exc: ValidationError) -> dict[str, Any]:
    """A pydantic error on a request body, phrased the way vLLM phrases it.

    ``param`` names the offending field (e.g. ``temperature``) so clients can
    point at it; vLLM's own validators attach it to their errors.
    """
    from vllm.entrypoints.serve.exception_handling.handlers.validation import (
        clean_loc_for_param,
    )
    from vllm.exceptions import VLLMValidationError

    errors = exc.errors(include_url=False, include_input=False)
    param = None
    for err in errors:
        ctx_error = err.get("ctx", {}).get("error")
        if isinstance(ctx_error, VLLMValidationError):
            param = ctx_error.parameter
            break
    if param is None and errors and errors[0].get("loc"):
        param = clean_loc_for_param(tuple(errors[0]["loc"]))
    lines = [f"{clean_loc_for_param(tuple(e.get('loc', ())))}: {e['msg']}" for e in errors[:10]]
    return error_body(400, "; ".join(lines) or "invalid request", param)
