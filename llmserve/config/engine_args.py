"""Checks ``engine_kwargs`` against vLLM's own ``AsyncEngineArgs``.

The checker is generic over vLLM's argument dataclasses: ``serving_args``
uses it for the ``serving`` block against vLLM's ``FrontendArgs``.

vLLM is imported lazily and only once: importing it takes seconds, and tools
that merely read configs (docs generation, linting) should not pay for it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import typing
from collections.abc import Callable
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


def dataclass_hints(cls: type) -> dict[str, Any]:
    """Field name -> type hint of one of vLLM's argument dataclasses."""
    fields = dataclasses.fields(cls)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        # A single unresolvable forward reference makes get_type_hints fail for
        # the whole class; the annotations that are already real types still work.
        hints = {f.name: f.type for f in fields if not isinstance(f.type, str)}
    return {f.name: hints.get(f.name, _NO_HINT) for f in fields}


@functools.cache
def engine_arg_hints() -> dict[str, Any] | None:
    """Field name -> type hint of AsyncEngineArgs; None when vLLM is not installed."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs
    except ImportError:
        return None
    return dataclass_hints(AsyncEngineArgs)


def _mentions_enum(hint: Any) -> bool:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return True
    return any(_mentions_enum(arg) for arg in typing.get_args(hint))


@functools.cache
def _adapter(hints_of: Callable[[], dict[str, Any] | None], name: str) -> TypeAdapter | None:
    hint = (hints_of() or {}).get(name, _NO_HINT)
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


def _describe(name: str, exc: ValidationError, value: Any, hint: Any, what: str) -> str:
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
        message = f"expected {_type_name(hint)}, got {value!r}"
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"invalid value for {what} '{name}': {message}"


def check_engine_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Loc, str]]]:
    """Validate engine kwargs; returns the (lightly coerced) kwargs and the issues found."""
    if engine_arg_hints() is None:
        # Never skip the check silently: say why it cannot run.
        return kwargs, [((), NO_VLLM)] if kwargs else []
    owned = {
        name: f"'{name}' is set by llmserve; use '{field}' instead"
        for name, field in OWNED_ENGINE_KWARGS.items()
    }
    return check_args(kwargs, engine_arg_hints, owned, "vLLM engine argument")


def check_args(
    kwargs: dict[str, Any],
    hints_of: Callable[[], dict[str, Any] | None],
    refused: dict[str, str],
    what: str,
) -> tuple[dict[str, Any], list[tuple[Loc, str]]]:
    """Check keys and value types against the fields ``hints_of()`` returns.

    ``refused`` maps keys that exist in vLLM but may not be set here to the
    message that says what to do instead; ``what`` names a key in messages.
    """
    hints = hints_of() or {}
    checked: dict[str, Any] = {}
    issues: list[tuple[Loc, str]] = []
    for name, value in kwargs.items():
        if name in refused:
            issues.append(((name,), refused[name]))
            continue
        if name not in hints:
            close = difflib.get_close_matches(name, [h for h in hints if h not in refused], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            issues.append(((name,), f"unknown {what} '{name}'{hint}"))
            continue
        checked[name] = value
        adapter = _adapter(hints_of, name)
        if adapter is None:
            continue
        try:
            validated = adapter.validate_python(value, strict=False)
        except ValidationError as exc:
            issues.append(((name,), _describe(name, exc, value, hints[name], what)))
            continue
        except (PydanticUserError, TypeError, NotImplementedError):
            continue  # the annotation is beyond what pydantic can check
        # Coerce scalars only ("4096" -> 4096); structured values (vLLM config
        # objects) are passed as written so that dumping the config stays plain.
        if type(validated) in (int, float, bool, str) and type(value) in (int, float, bool, str):
            checked[name] = validated
    return checked, issues
