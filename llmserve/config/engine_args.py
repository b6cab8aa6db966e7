"""Checks ``engine_kwargs`` against vLLM's own ``AsyncEngineArgs``.

vLLM is imported lazily and only once: importing it takes seconds, and tools
that merely read configs (docs generation, linting) should not pay for it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import typing
from typing import Any

from pydantic import PydanticUserError, TypeAdapter, ValidationError

from llmserve.config.errors import Loc, format_loc

# Engine arguments that llmserve derives from its own config fields, so that
# the two can never disagree. Value: the config field to use instead.
OWNED_ENGINE_KWARGS: dict[str, str] = {
    "model": "source",
    "served_model_name": "id",
    "tensor_parallel_size": "parallelism.tensor_parallel_size",
    "pipeline_parallel_size": "parallelism.pipeline_parallel_size",
    "distributed_executor_backend": "device",
}

NO_VLLM = (
    "cannot check vLLM engine arguments: vLLM is not installed; pip install "
    "'llmserve[cpu]' (x86-64 CPUs) or pip install 'llmserve[gpu]' (CUDA GPUs)"
)

_NO_HINT = object()
_MAX_MESSAGE = 300


@functools.cache
def engine_arg_hints() -> dict[str, Any] | None:
    """Field name -> type hint of AsyncEngineArgs; None when vLLM is not installed."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError:
        return None
    fields = dataclasses.fields(AsyncEngineArgs)
    try:
        hints = typing.get_type_hints(AsyncEngineArgs)
    except Exception:
        # A single unresolvable forward reference makes get_type_hints fail for
        # the whole class; the annotations that are already real types still work.
        hints = {f.name: f.type for f in fields if not isinstance(f.type, str)}
    return {f.name: hints.get(f.name, _NO_HINT) for f in fields}


def _mentions_enum(hint: Any) -> bool:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return True
    return any(_mentions_enum(arg) for arg in typing.get_args(hint))


@functools.cache
def _adapter(name: str) -> TypeAdapter | None:
    hint = (engine_arg_hints() or {}).get(name, _NO_HINT)
    # vLLM accepts enum members by name ("FLASH_ATTN") while pydantic only
    # accepts their values, so type-checking enums would reject valid configs.
    if hint is _NO_HINT or _mentions_enum(hint):
        return None
    try:
        return TypeAdapter(hint)
    except Exception:
        return None


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _describe(name: str, exc: ValidationError, value: Any) -> str:
    errors = exc.errors(include_url=False)
    if len(errors) == 1:
        error = errors[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            message = f"{format_loc(error['loc'])}: {message}"
        elif isinstance(value, str | int | float | bool):
            message = f"{message} (got {value!r})"
    else:
        # Several errors means a union whose every member failed; listing each
        # member's complaint is noise, the expected type says it better.
        hints = engine_arg_hints() or {}
        message = f"expected {_type_name(hints[name])}, got {value!r}"
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"invalid value for vLLM engine argument '{name}': {message}"


def check_engine_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Loc, str]]]:
    """Validate engine kwargs; returns the (lightly coerced) kwargs and the issues found."""
    hints = engine_arg_hints()
    if hints is None:
        # Never skip the check silently: say why it cannot run.
        return kwargs, [((), NO_VLLM)] if kwargs else []
    checked: dict[str, Any] = {}
    issues: list[tuple[Loc, str]] = []
    for name, value in kwargs.items():
        if name in OWNED_ENGINE_KWARGS:
            issues.append(
                ((name,), f"'{name}' is set by llmserve; use '{OWNED_ENGINE_KWARGS[name]}' instead")
            )
            continue
        if name not in hints:
            close = difflib.get_close_matches(name, hints, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            issues.append(((name,), f"unknown vLLM engine argument '{name}'{hint}"))
            continue
        checked[name] = value
        adapter = _adapter(name)
        if adapter is None:
            continue
        try:
            validated = adapter.validate_python(value, strict=False)
        except ValidationError as exc:
            issues.append(((name,), _describe(name, exc, value)))
            continue
        except (PydanticUserError, TypeError, NotImplementedError):
            continue  # the annotation is beyond what pydantic can check
        # Coerce scalars only ("4096" -> 4096); structured values (vLLM config
        # objects) are passed as written so that dumping the config stays plain.
        if type(validated) in (int, float, bool, str) and type(value) in (int, float, bool, str):
            checked[name] = validated
    return checked, issues
