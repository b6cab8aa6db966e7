"""The HTTP front door: where the OpenAI-compatible API listens and who may call it."""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from llmserve.config.common import EnvVarName
from llmserve.config.deployment import IngressDeploymentConfig
from llmserve.config.errors import (
    ConfigError,
    ConfigIssue,
    format_loc,
    issues_error,
    readable_errors,
)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""The Host names a loopback-bound ingress answers by default (``[::1]`` is ``::1``)."""


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

_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


def normalize_host(value: str) -> str:
    """A Host name as the ingress compares it: lower case, no IPv6 brackets, no final dot."""
    value = value.strip().lower()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return value.rstrip(".") if value not in ("", ".") else value


def _check_allowed_host(value: str) -> str:
    name = normalize_host(value)
    if not name:
        raise ValueError("a host name must not be empty")
    if "/" in name:
        raise ValueError(f"{value!r}: a host name, not a URL (e.g. api.example.com)")
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise ValueError(
                f"{value!r}: a host name with no port (every port is accepted)"
            ) from None
        return name
    if name == "*":
        return name
    if not _HOST_NAME.match(name.removeprefix("*.")):
        raise ValueError(
            f"{value!r}: not a host name, an IP address, '*.domain' (its subdomains) or '*'"
        )
    return name


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is a loopback one (reachable from this machine only)."""
    name = normalize_host(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class IngressConfig(BaseModel):
    """The OpenAI-compatible HTTP server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 for all interfaces.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    route_prefix: str = Field("/", description="URL prefix of the API, starting with '/'.")
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description=(
            "Accepted bearer keys, literal or {env: NAME}; empty disables auth, which only a "
            "loopback host or allow_unauthenticated: true allows."
        ),
    )
    allow_unauthenticated: bool = Field(
        False,
        description=(
            "Serve without API keys on an address that is not loopback (0.0.0.0, a LAN IP, a "
            "pod). Off, such a config is refused: anyone who can reach the address could use "
            "every model and read every RAG corpus. On, the ingress logs a warning when it "
            "starts. Kubernetes pods always listen on all interfaces."
        ),
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description=(
            "Host header names the ingress answers (any port): names or IP addresses, "
            "'*.example.com' for its subdomains, '*' for any. Other hosts get 421, which stops "
            "a web page from reaching the API by DNS rebinding. null: localhost, 127.0.0.1 "
            "and [::1] when host is a loopback address; any host otherwise (API keys guard "
            "it, and its names are not known here). /health answers any host."
        ),
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

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _check_allowed_hosts(cls, value: object) -> object:
        if not isinstance(value, list):
            return value  # None, or a type error that field validation reports
        if not value:
            raise ValueError("an empty list answers no host: leave it out, or '*' for any host")
        issues = []
        names: list[object] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                names.append(item)  # field validation reports the type
                continue
            try:
                names.append(_check_allowed_host(item))
            except ValueError as exc:
                issues.append(((i,), str(exc)))
        if issues:
            raise issues_error(cls.__name__, issues)
        return names

    @model_validator(mode="after")
    def _check_exposure(self) -> IngressConfig:
        problem = self.unauthenticated_exposure()
        if problem is not None:
            raise issues_error(type(self).__name__, [(("api_keys",), problem)])
        return self

    def on_loopback(self) -> bool:
        """Whether ``host`` is a loopback address: only this machine can connect."""
        return is_loopback(self.host)

    def unauthenticated_exposure(self) -> str | None:
        """Why this ingress must not start as configured (no keys on a reachable
        address, not allowed explicitly), or None. Config validation refuses such a
        config; the ingress replica asks again, for a copy made without validation."""
        if self.on_loopback() or self.api_keys or self.allow_unauthenticated:
            return None
        return (
            f"host {self.host!r} is not a loopback address, so anyone who can reach it could "
            "use every model (and read every RAG corpus) without a key: set api_keys, or "
            "allow_unauthenticated: true to serve without keys on purpose"
        )

    def serves_openly(self) -> bool:
        """No keys on a reachable address, allowed explicitly: worth a loud warning at start."""
        return not self.on_loopback() and not self.api_keys and self.allow_unauthenticated

    def open_warning(self) -> str | None:
        """What ``llmserve run`` prints and the ingress replica logs when ``serves_openly``."""
        if not self.serves_openly():
            return None
        return (
            f"WARNING: serving WITHOUT API keys on {self.host}:{self.port} "
            "(ingress.allow_unauthenticated: true): anyone who can reach this address can use "
            "every model and pipeline and read every RAG corpus"
        )

    def host_allow_list(self) -> list[str] | None:
        """The Host names answered (normalised, patterns kept); None answers any host."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        return list(LOOPBACK_NAMES) if self.on_loopback() else None

    def with_address(self, host: str | None = None, port: int | None = None) -> IngressConfig:
        """A validated copy listening on ``host``/``port`` (``llmserve run --host/--port``);
        ``ConfigError`` at ``ingress.*`` paths when the new address breaks a rule."""
        data = self.model_dump()
        data.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
        try:
            return IngressConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                [
                    ConfigIssue(format_loc(("ingress", *loc)), message)
                    for loc, message in readable_errors(exc, IngressConfig)
                ]
            ) from None

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
