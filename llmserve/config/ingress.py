"""The HTTP front door: where the OpenAI-compatible API listens and who may call it."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

from llmserve.config.common import EnvVarName
from llmserve.config.deployment import IngressDeploymentConfig


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


class IngressConfig(BaseModel):
    """The OpenAI-compatible HTTP server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 for all interfaces.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    route_prefix: str = Field("/", description="URL prefix of the API, starting with '/'.")
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description="Accepted bearer keys, literal or {env: NAME}; empty disables auth.",
    )
    max_request_body_bytes: int = Field(
        1_048_576, gt=0, description="Largest request body accepted, in bytes."
    )
    request_timeout_s: float = Field(
        300,
        gt=0,
        description=(
            "Longest a request may take end to end (queueing included); then a plain request "
            "gets 504, a stream an error event, and the engine request is aborted. Models "
            "and pipelines may set their own."
        ),
    )
    send_timeout_s: float = Field(
        30,
        gt=0,
        description=(
            "Longest a stream's client may accept no bytes before the stream is cut, its "
            "engine request aborted and its slot freed. It starts counting only once every "
            "buffer between the client and the ingress is full (hundreds of KB of tokens), so "
            "a slow client that still reads never hits it; one that stopped reading holds a "
            "request slot for at most this long."
        ),
    )
    retry_after_s: int = Field(
        1, ge=0, description="Seconds sent in Retry-After with 429 (overload) and 503 answers."
    )
    deployment: IngressDeploymentConfig = Field(
        default_factory=IngressDeploymentConfig,
        description=(
            "Ray Serve settings of the ingress. With fused_model, replicas, placement and "
            "health checks come from that model; max_ongoing/max_queued_requests from here."
        ),
    )
    fused_model: str | None = Field(
        None,
        description=(
            "id of a model whose engine runs inside the ingress replicas, so its tokens cross "
            "no Ray hop; that model's deployment settings then apply to the ingress."
        ),
    )

    @field_validator("route_prefix")
    @classmethod
    def _check_route_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {value!r}")
        return value

    def resolve_api_keys(self) -> list[str]:
        """The accepted keys, with ``{env: NAME}`` entries read from the environment."""
        return resolve_api_keys(self.api_keys)


def resolve_api_keys(api_keys: list[str | ApiKeyFromEnv]) -> list[str]:
    """Literal keys as they are; ``{env: NAME}`` keys read from this process's environment."""
    keys = []
    for key in api_keys:
        if isinstance(key, str):
            keys.append(key)
            continue
        value = os.environ.get(key.env)
        # An empty key would accept "Bearer " and so silently disable auth.
        if not value:
            raise ValueError(f"API key environment variable {key.env} is not set or empty")
        keys.append(value)
    return keys
