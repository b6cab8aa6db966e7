"""Small value types shared by several config modules."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, StringConstraints

# Served ids show up in URLs and in OpenAI "model" fields, so no whitespace;
# slashes stay allowed because ids like "org/model" are common.
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]

EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _number_to_str(value: object) -> object:
    # YAML turns `VLLM_CPU_KVCACHE_SPACE: 1` into an int; environment values
    # are strings, so accept plain numbers rather than forcing users to quote.
    # bool is excluded on purpose: `true` has no single obvious spelling.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


EnvVarValue = Annotated[str, BeforeValidator(_number_to_str)]
