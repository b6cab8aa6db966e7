"""API keys as a config writes them: a literal string, or ``{env: NAME}`` read at start."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from llmserve.config.common import EnvVarName


class ApiKeyFromEnv(BaseModel):
    """An API key read from an environment variable when the app starts."""

    model_config = ConfigDict(extra="forbid")

    env: EnvVarName = Field(..., description="Name of the environment variable holding the key.")


def _parse_api_key(value: object) -> object:
    # Parsing the mapping form here, instead of letting pydantic try each union
    # member, gives one error at the real path rather than one per member.
    if isinstance(value, dict):
        return ApiKeyFromEnv.model_validate(value)
    if isinstance(value, str) and not value:
        raise ValueError("an API key must not be empty")
    if isinstance(value, str | ApiKeyFromEnv):
        return value
    raise ValueError("an API key is a string or a mapping like {env: NAME}")


ApiKey = Annotated[str | ApiKeyFromEnv, BeforeValidator(_parse_api_key)]


def resolve_api_key(key: str | ApiKeyFromEnv) -> str:
    """A literal key as it is; ``{env: NAME}`` read from this process's environment."""
    if isinstance(key, str):
        return key
    value = os.environ.get(key.env)
    # An empty key would accept "Bearer " and so silently disable auth.
    if not value:
        raise ValueError(f"API key environment variable {key.env} is not set or empty")
    return value


def resolve_api_keys(api_keys: list[str | ApiKeyFromEnv]) -> list[str]:
    """Literal keys as they are; ``{env: NAME}`` keys read from this process's environment."""
    return [resolve_api_key(key) for key in api_keys]
