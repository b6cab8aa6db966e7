"""The HTTP front door: where the OpenAI-compatible API listens and who may call it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmserve.config.deployment import IngressDeploymentConfig
from llmserve.config.errors import (
    ConfigError,
    ConfigIssue,
    format_loc,
    issues_error,
    readable_errors,
)
from llmserve.config.hosts import LOOPBACK_NAMES, check_allowed_host, is_loopback, normalize_host
from llmserve.config.keys import ApiKey, ApiKeyFromEnv, resolve_api_key, resolve_api_keys
from llmserve.config.tenants import TenantConfig, find_tenant_issues

__all__ = [
    "ApiKey",
    "ApiKeyFromEnv",
    "IngressConfig",
    "is_loopback",
    "normalize_host",
    "resolve_api_keys",
]


class IngressConfig(BaseModel):
    """The OpenAI-compatible HTTP server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 for all interfaces.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    route_prefix: str = Field("/", description="URL prefix of the API, starting with '/'.")
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description=(
            "Accepted bearer keys, literal or {env: NAME}, each an anonymous caller with no "
            "limits; empty (and no tenants) disables auth, which only a loopback host or "
            "allow_unauthenticated: true allows."
        ),
    )
    tenants: list[TenantConfig] = Field(
        default_factory=list,
        description=(
            "Named callers with their own keys, rate limits, priority, model access and "
            "prefix-cache isolation (docs/tenants.md). Their keys are accepted besides api_keys."
        ),
    )
    priority_reserved_share: float = Field(
        0.25,
        ge=0,
        lt=1,
        description=(
            "Share of the running slots and of the queue places of every model and pipeline "
            "served in the ingress that low-priority tenants never take (rounded down), so "
            "that normal and high ones find room at a busy model."
        ),
    )
    priority_aging_s: float = Field(
        10,
        gt=0,
        description=(
            "A request that has waited this long for a slot goes ahead of everything that "
            "arrived after it, whatever the priorities: higher-priority load delays a "
            "lower-priority request, it never starves it."
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
                names.append(check_allowed_host(item))
            except ValueError as exc:
                issues.append(((i,), str(exc)))
        if issues:
            raise issues_error(cls.__name__, issues)
        return names

    @model_validator(mode="after")
    def _check_tenants(self) -> IngressConfig:
        issues = find_tenant_issues(self.tenants, self.api_keys)
        if issues:
            raise issues_error(type(self).__name__, issues)
        return self

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
        if self.on_loopback() or self.key_refs() or self.allow_unauthenticated:
            return None
        return (
            f"host {self.host!r} is not a loopback address, so anyone who can reach it could "
            "use every model (and read every RAG corpus) without a key: set api_keys, or "
            "allow_unauthenticated: true to serve without keys on purpose"
        )

    def serves_openly(self) -> bool:
        """No keys on a reachable address, allowed explicitly: worth a loud warning at start."""
        return not self.on_loopback() and not self.key_refs() and self.allow_unauthenticated

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

    def key_refs(self) -> list[tuple[str, str | ApiKeyFromEnv]]:
        """Every key as configured, with its YAML path below ``ingress``: the anonymous
        ``api_keys``, then each tenant's."""
        refs: list[tuple[str, str | ApiKeyFromEnv]] = [
            (f"api_keys[{i}]", key) for i, key in enumerate(self.api_keys)
        ]
        for t, tenant in enumerate(self.tenants):
            if tenant.api_key is not None:
                refs.append((f"tenants[{t}].api_key", tenant.api_key))
            refs += [(f"tenants[{t}].api_keys[{k}]", key) for k, key in enumerate(tenant.api_keys)]
        return refs

    def resolve_all_keys(self) -> list[str]:
        """Every key, anonymous and tenants', read from the environment where it says so;
        ``ValueError`` naming the first variable that is not set."""
        return [resolve_api_key(key) for _, key in self.key_refs()]
