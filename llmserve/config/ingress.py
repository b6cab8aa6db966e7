"""The HTTP front door: where the OpenAI-compatible API listens and who may call it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmserve.config.deployment import IngressDeploymentConfig
from llmserve.config.errors import issues_error
from llmserve.config.keys import ApiKey, ApiKeyFromEnv, resolve_api_key, resolve_api_keys
from llmserve.config.tenants import TenantConfig, find_tenant_issues

__all__ = ["ApiKey", "ApiKeyFromEnv", "IngressConfig", "resolve_api_keys"]


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
            "limits; empty (and no tenants) disables auth."
        ),
    )
    tenants: list[TenantConfig] = Field(
        default_factory=list,
        description=(
            "Named callers with their own keys, rate limits, priority, model access and "
            "prefix-cache isolation (README: Tenants). Their keys are accepted besides api_keys."
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

    @model_validator(mode="after")
    def _check_tenants(self) -> IngressConfig:
        issues = find_tenant_issues(self.tenants, self.api_keys)
        if issues:
            raise issues_error(type(self).__name__, issues)
        return self

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
