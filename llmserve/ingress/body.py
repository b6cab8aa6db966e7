"""Reading a request body: JSON, an object, and nothing a later step would choke on."""

from __future__ import annotations

import json
import math
from typing import Any

from llmserve.openai.errors import APIError


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON does not, and neither do engines.
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; ``APIError(400)`` for anything else."""
    try:
        body = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    # JSON may escape a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 text can
    # hold: tokenizers and JSON answers would fail on it later. Only escaped
    # bodies can carry one, so only they pay for the check.
    if b"\\ud" in raw or b"\\uD" in raw:
        try:
            json.dumps(body, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise APIError(400, "request body holds an unpaired UTF-16 surrogate") from None
    return body
