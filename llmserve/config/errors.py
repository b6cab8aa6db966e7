"""Config problems as ``path: message`` pairs, and how validators report them."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config, e.g. ``models[0].engine_kwargs.max_model_len``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """An invalid config; ``issues`` lists every problem found, not just the first."""

    def __init__(self, issues: Sequence[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def format_loc(loc: Loc) -> str:
    """``("models", 0, "id")`` -> ``models[0].id``; the empty loc is ``<root>``."""
    out = ""
    for part in loc:
        if isinstance(part, int) or part == "[key]":
            out += f"[{part}]" if isinstance(part, int) else part
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def issues_error(title: str, issues: Iterable[tuple[Loc, str]]) -> ValidationError:
    """A ValidationError carrying one error per ``(loc, message)``.

    Raised from a validator, pydantic keeps each loc relative to the field or
    model being validated, which is how a model-level check can still point at
    ``top_k`` rather than at the whole pipeline.
    """
    details = [
        InitErrorDetails(
            # The message goes through the context so braces in it are not
            # mistaken for template placeholders.
            type=PydanticCustomError("llmserve_config", "{message}", {"message": message}),
            loc=loc,
            input=None,
        )
        for loc, message in issues
    ]
    return ValidationError.from_exception_data(title, details)


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional; a union of several types keeps its first model."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = (models or args)[0]
        else:
            return tp


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _message(error: ErrorDetails, root: type[BaseModel]) -> str:
    kind, loc, msg = error["type"], error["loc"], error["msg"]
    if kind == "extra_forbidden" and loc:
        model = _model_at(root, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), model.model_fields, n=1) if model else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown key '{loc[-1]}'{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("value_error", "assertion_error"):
        return str(error.get("ctx", {}).get("error", msg))
    if kind == "llmserve_config":
        return msg
    value = error.get("input")
    if isinstance(value, str | int | float | bool) or value is None:
        shown = repr(value)
        if len(shown) <= 60:
            return f"{msg} (got {shown})"
    return msg


def readable_errors(exc: ValidationError, root: type[BaseModel]) -> list[tuple[Loc, str]]:
    """``(loc, message)`` per error, with messages reworded for config authors."""
    return [(tuple(e["loc"]), _message(e, root)) for e in exc.errors(include_url=False)]


def to_issues(exc: ValidationError, root: type[BaseModel]) -> list[ConfigIssue]:
    """Readable issues, paths relative to ``root``, from a pydantic ValidationError."""
    return [ConfigIssue(format_loc(loc), message) for loc, message in readable_errors(exc, root)]
