"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``.

We follow vLLM's own server for the shape, so a client sees the same thing
from llmserve as from a bare vLLM server: ``code`` is the HTTP status, and
errors that vLLM's serving layer produces are passed through untouched.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError

from llmserve.compat.vllm import error_param

# OpenAI's error ``type`` for the statuses llmserve produces itself.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "requests",
    500: "internal_server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}
# OpenAI's own rate-limit errors carry a string code; the OpenAI SDK raises
# ``RateLimitError`` (and retries, honouring Retry-After) on the status alone.
_CODES: dict[int, str] = {429: "rate_limit_exceeded"}
# String codes some errors carry instead of their status, and the status each means.
_STATUS_OF_CODE = {"rate_limit_exceeded": 429, "model_not_found": 404}


class APIError(Exception):
    """An error with an HTTP status that the ingress turns into a JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        type: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.param = param
        self.type = type or _TYPES.get(self.status) or HTTPStatus(self.status).phrase
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.type, self.code)

    def __reduce__(self):
        # Keeps the status and param when the error crosses a Ray handle.
        return (APIError, (self.status, self.message, self.param, self.type, self.code))


def error_body(
    status: int,
    message: str,
    param: str | None = None,
    type: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """``code`` is the status (OpenAI's string code for a 429), unless given."""
    return {
        "error": {
            "message": message,
            "type": type or _TYPES.get(status) or HTTPStatus(status).phrase,
            "param": param,
            "code": code or _CODES.get(int(status), int(status)),
        }
    }


def status_of(body: dict[str, Any]) -> int:
    """HTTP status of an error body (vLLM's and ours carry it in ``code``)."""
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and code in _STATUS_OF_CODE:
        return _STATUS_OF_CODE[code]
    return code if isinstance(code, int) and 400 <= code < 600 else 500


def overloaded(target: str) -> APIError:
    """429: no room to queue the request; nothing was done, retrying is safe."""
    return APIError(429, f"'{target}' is at capacity; retry after the time in Retry-After")


def model_not_found(model: str, param: str = "model") -> APIError:
    """404 for an id nobody serves, and for one the caller's key may not use: the same
    answer, in OpenAI's words and code, so that a key cannot find out what else is served."""
    return APIError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        param=param,
        type="invalid_request_error",
        code="model_not_found",
    )


def unavailable(target: str) -> APIError:
    """503: no healthy replica (or engine) can take the request right now."""
    return APIError(503, f"'{target}' is unavailable; retry after the time in Retry-After")


def over_limit(
    param: str, value: object, limit: int, target: str, noun: str | None = None
) -> APIError:
    """400: a request field past a per-request cap; names the field and the cap.

    ``noun``: what ``param`` counts (``value`` is then how many it holds).
    """
    if noun is None:
        message = f"{param} must be at most {limit} for '{target}' (got {value})"
    else:
        message = f"{param} holds {value} {noun}; '{target}' takes at most {limit} per request"
    return APIError(400, message, param=param)


def timed_out(target: str, seconds: float) -> APIError:
    return APIError(504, f"request to '{target}' did not finish within {seconds:g} s")


def from_exception(exc: BaseException, target: str, logger: logging.Logger) -> APIError:
    """An exception from a handle call as the error the client should see.

    Overload and missing replicas are the caller's to retry (429, 503);
    anything unexpected is logged here and answered without internal detail.
    """
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, BackPressureError):
        return overloaded(target)
    if isinstance(
        exc, (DeploymentUnavailableError, RayActorError, ActorDiedError, ActorUnavailableError)
    ):
        return unavailable(target)
    if isinstance(exc, TimeoutError):
        return APIError(504, f"request to '{target}' timed out")
    logger.error("request to %s failed", target, exc_info=exc)
    return APIError(500, "internal server error")


def validation_error_body(exc: ValidationError) -> dict[str, Any]:
    """A pydantic error on a request body, phrased the way vLLM phrases it.

    ``param`` names the offending field (e.g. ``temperature``) so clients can
    point at it; vLLM's own validators attach it to their errors.
    """
    from vllm.exceptions import VLLMValidationError

    errors = exc.errors(include_url=False, include_input=False)
    param = None
    for err in errors:
        ctx_error = err.get("ctx", {}).get("error")
        if isinstance(ctx_error, VLLMValidationError):
            param = ctx_error.parameter
            break
    if param is None and errors and errors[0].get("loc"):
        param = error_param(tuple(errors[0]["loc"]))
    lines = [f"{error_param(tuple(e.get('loc', ())))}: {e['msg']}" for e in errors[:10]]
    return error_body(400, "; ".join(lines) or "invalid request", param)
