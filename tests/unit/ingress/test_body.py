"""Reading a request body: a JSON object, never nested deeper than any later step can walk."""

from __future__ import annotations

import json
import sys

import pytest

from llmserve.ingress.body import MAX_JSON_DEPTH, parse_json, too_deep
from llmserve.openai.errors import APIError

pytestmark = pytest.mark.unit


def nested(depth: int, inner: str = "[]") -> bytes:
    """``{"model": "m", "messages": ...}`` whose deepest array is ``depth`` levels down
    (the body object is level 1)."""
    arrays = depth - 1
    return (
        '{"model": "m", "messages": ' + "[" * (arrays - 1) + inner + "]" * (arrays - 1) + "}"
    ).encode()


def _refused(raw: bytes) -> APIError:
    with pytest.raises(APIError) as err:
        parse_json(raw)
    assert err.value.status == 400
    return err.value


def test_the_deepest_body_allowed_parses_and_one_level_more_is_400() -> None:
    assert parse_json(nested(MAX_JSON_DEPTH))["model"] == "m"
    err = _refused(nested(MAX_JSON_DEPTH + 1))
    assert err.message == f"request body nests arrays or objects more than {MAX_JSON_DEPTH} deep"


@pytest.mark.parametrize("depth", [3_000, 100_000])
def test_a_body_nested_thousands_deep_is_400_not_a_recursion_error(depth: int) -> None:
    assert "more than 64 deep" in _refused(nested(depth)).message


def test_the_check_walks_a_whole_large_body_without_recursing() -> None:
    many = b"[" + b"[[1], {}]," * 100_000 + b"[]]"  # 1 MB, 400,000 brackets, 3 deep
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(60)
    try:
        assert not too_deep(many)
        assert too_deep(many[:-1] + b"[" * 70 + b"]" * 70 + b"]")
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize(
    "text",
    ["[" * 5_000, "{" * 5_000 + "]", 'a \\" [[[[ \\\\" ' + "[" * 200, "\\u005b" * 200],
    ids=["brackets", "unbalanced", "escaped-quotes", "escaped-brackets"],
)
def test_brackets_inside_strings_do_not_nest(text: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    assert parse_json(json.dumps(body).encode()) == body
    assert parse_json(json.dumps(body, ensure_ascii=False).encode()) == body


def test_objects_count_as_levels_too() -> None:
    deep = '{"a": ' * 80 + "1" + "}" * 80
    assert "more than 64 deep" in _refused(f'{{"model": "m", "x": {deep}}}'.encode()).message
    assert not too_deep(b'{"a": {"b": [1, [2, {"c": [3]}]]}}')


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_other_json_encodings_are_checked_alike(encoding: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": 'say \\" [[[["'}]}
    assert parse_json(json.dumps(body).encode(encoding)) == body
    assert "more than 64 deep" in _refused(nested(200).decode().encode(encoding)).message
    lone = '{"model": "m", "messages": "\\ud800"}'.encode(encoding)
    assert "unpaired UTF-16 surrogate" in _refused(lone).message


def test_a_large_shallow_body_is_read() -> None:
    body = {"model": "m", "input": [[1, 2]] * 100_000}
    assert parse_json(json.dumps(body).encode()) == body
