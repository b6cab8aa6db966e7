"""Tenants: who calls the API, and what each may do.

A tenant is a named set of API keys with its own limits, priority, model
access and prefix-cache isolation. ``ingress.api_keys`` stays the simple form:
every key there is an anonymous caller with no limits. The ingress enforces
all of it (``ingress/tenants.py``); the keys are resolved inside its replicas.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmserve.config.common import Identifier
from llmserve.config.errors import Loc
from llmserve.config.keys import ApiKey, ApiKeyFromEnv
from llmserve.literals import Priority

ANONYMOUS = "anonymous"
"""The metrics label of callers that are no configured tenant (``ingress.api_keys``, or no
auth at all); no tenant may take this id."""


class TenantConfig(BaseModel):
    """One tenant: its keys, limits, priority, model access and cache isolation."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier = Field(
        ...,
        description=(
            "Name of the tenant in metrics (label `tenant`) and logs; never the key itself. "
            f"'{ANONYMOUS}' is taken: it labels callers that are no tenant."
        ),
    )
    api_key: ApiKey | None = Field(
        None, description="The tenant's bearer key, literal or {env: NAME}; or use api_keys."
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list,
        description=(
            "Several bearer keys of the tenant (e.g. while rotating), literal or {env: NAME}; "
            "they share its limits."
        ),
    )
    priority: Priority = Field(
        "normal",
        description=(
            "Admission order under overload: high, normal or low. Low is refused first and "
            "never takes the slots kept by ingress.priority_reserved_share; also vLLM's "
            "request priority for models whose engine runs scheduling_policy: priority."
        ),
    )
    requests_per_minute: int | None = Field(
        None,
        gt=0,
        description=(
            "Requests the tenant may start per minute (a bucket that refills continuously); "
            "null: no limit. Over it: 429 with Retry-After, before any work."
        ),
    )
    tokens_per_minute: int | None = Field(
        None,
        gt=0,
        description=(
            "Prompt plus completion tokens per minute; null: no limit. A request reserves its "
            "prompt (estimated as body bytes / 4) plus its max_tokens (without one: 16 for "
            "completions, 1024 for chat and Responses) when admitted; the reservation is "
            "settled with the usage vLLM reports when it ends."
        ),
    )
    models: list[str] | None = Field(
        None,
        description=(
            "The ids the tenant may call (models, LoRA adapters, embedders, rerankers, "
            "pipelines); null: all. Any other id answers 404 model_not_found and is not in "
            "the tenant's /v1/models."
        ),
    )
    cache_isolation: bool = Field(
        False,
        description=(
            "Give every request of the tenant a vLLM cache_salt derived from its first key, so "
            "its prompts never share vLLM's prefix cache with anyone else's."
        ),
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if value == ANONYMOUS:
            raise ValueError(f"'{ANONYMOUS}' is reserved for callers that are no tenant")
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> TenantConfig:
        if self.api_key is not None and self.api_keys:
            raise ValueError("set api_key or api_keys, not both")
        if self.api_key is None and not self.api_keys:
            raise ValueError("a tenant needs a key: set api_key or api_keys")
        return self

    def bearer_keys(self) -> list[str | ApiKeyFromEnv]:
        """The tenant's keys, first key first (its cache salt derives from that one)."""
        return [self.api_key] if self.api_key is not None else list(self.api_keys)


def find_tenant_issues(tenants: Iterable[TenantConfig], api_keys: list) -> list[tuple[Loc, str]]:
    """Duplicate tenant ids, and a key (or key variable) given to two callers."""
    issues: list[tuple[Loc, str]] = []
    ids: set[str] = set()
    owners: dict[Any, str] = {}
    for i, key in enumerate(api_keys):
        owners.setdefault(_key_identity(key), f"api_keys[{i}]")
    for t, tenant in enumerate(tenants):
        if tenant.id in ids:
            issues.append((("tenants", t, "id"), f"duplicate tenant id '{tenant.id}'"))
        ids.add(tenant.id)
        field = "api_key" if tenant.api_key is not None else "api_keys"
        for k, key in enumerate(tenant.bearer_keys()):
            loc: Loc = ("tenants", t, field) if field == "api_key" else ("tenants", t, field, k)
            owner = owners.setdefault(_key_identity(key), f"tenant '{tenant.id}'")
            if owner != f"tenant '{tenant.id}'" or _repeats(tenant.bearer_keys(), key, k):
                what = f"variable {key.env}" if isinstance(key, ApiKeyFromEnv) else "key"
                issues.append((loc, f"the same {what} is already given to {owner}"))
    return issues


def _key_identity(key: Any) -> Any:
    return ("env", key.env) if isinstance(key, ApiKeyFromEnv) else ("literal", key)


def _repeats(keys: list, key: Any, index: int) -> bool:
    return any(_key_identity(k) == _key_identity(key) for k in keys[:index])


def find_tenant_model_issues(
    data: Mapping[str, Any], known: Iterable[str]
) -> list[tuple[Loc, str]]:
    """Every id in a tenant's ``models`` must be one clients can call."""
    ingress = data.get("ingress")
    tenants = ingress.get("tenants") if isinstance(ingress, Mapping) else None
    if not isinstance(tenants, list):
        return []
    known = sorted(set(known))
    issues: list[tuple[Loc, str]] = []
    for t, tenant in enumerate(tenants):
        models = tenant.get("models") if isinstance(tenant, Mapping) else None
        for m, model in enumerate(models if isinstance(models, list) else []):
            if not isinstance(model, str) or model in known:
                continue
            close = difflib.get_close_matches(model, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
            issues.append((("ingress", "tenants", t, "models", m), f"unknown id '{model}'{hint}"))
    return issues
