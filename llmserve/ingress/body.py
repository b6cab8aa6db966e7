"""Reading a request body: JSON, an object, and nothing a later step would choke on."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from llmserve.openai.errors import APIError

MAX_JSON_DEPTH = 64
"""Most nested arrays and objects a body may hold. Every step after parsing walks a
body recursively (pydantic, the chat template, Ray's pickle across a handle), and
each has its own recursion limit; a body 3,000 levels deep was a 500. Real OpenAI
bodies stay far below: a chat message's content part is 4 levels deep, a tool's
JSON schema nested ten objects deep about 25."""

# A JSON string, escapes included: brackets inside one do not nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = frozenset(b"[{")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity; JSON does not, and neither do engines.
    raise ValueError(f"{name} is not valid JSON")


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``raw`` nests arrays and objects more than ``limit`` deep.

    In O(size) and without recursion, before ``json.loads`` (which recurses) sees
    it. Most bodies have fewer brackets than ``limit`` at all and cost two counts;
    the others are scanned with their strings cut out, in C but for one loop over
    the brackets, which stops at the first one past ``limit``.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _utf8(raw: bytes) -> bytes:
    """``raw`` in UTF-8. JSON may come in UTF-16 or UTF-32 too (``json.loads`` reads
    them); the byte-level checks here assume UTF-8, so such a body is re-encoded."""
    encoding = json.detect_encoding(raw)
    if encoding in ("utf-8", "utf-8-sig"):
        return raw
    try:
        return raw.decode(encoding).encode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}") from None


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; ``APIError(400)`` for anything else."""
    raw = _utf8(raw)
    if too_deep(raw):
        raise APIError(400, f"request body nests arrays or objects more than {MAX_JSON_DEPTH} deep")
    try:
        body = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
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
