"""How the callers of a model's deployment pick one of its replicas.

Serve's default router (power of two choices) spreads requests that share a
long prefix over every replica, so each replica's prefix cache holds every
prefix, or, once they no longer fit, none. The ``prefix_aware`` router
(``servers/routing/``) sends a prefix back to the replica that has it
cached while the replicas' loads are close, and load-balances otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmserve.config.deployment import DeploymentConfig
from llmserve.config.errors import issues_error

RequestRouter = Literal["power_of_two", "prefix_aware"]

DEFAULT_REQUEST_ROUTER: RequestRouter = "prefix_aware"
"""Chosen from ``scripts/bench_routing.py`` (docs/performance.md, "Routing")."""


class PrefixRouterConfig(BaseModel):
    """Settings of the ``prefix_aware`` router."""

    model_config = ConfigDict(extra="forbid")

    imbalance_threshold: int = Field(
        4,
        ge=0,
        description=(
            "A replica running more than this many requests above the least busy one gets "
            "no affinity traffic and no new prefixes until the gap closes: the request goes "
            "to the least busy replicas instead, so a cached prefix never makes a hot spot."
        ),
    )
    min_match_chars: int = Field(
        256,
        ge=1,
        description=(
            "Shortest shared prompt prefix, in characters of the messages, that sends a "
            "request to the replica that has it; shorter matches are load-balanced. vLLM "
            "caches whole KV blocks (16 tokens on GPU, 128 on CPU), so a match shorter than "
            "a block saves nothing."
        ),
    )
    session_affinity: bool = Field(
        False,
        description=(
            "Keep a session's requests on the replica that served it, while loads allow: the "
            "session is the X-Session-Id header, else the body's `user` field. Off: only "
            "the prompt's prefix counts (which already keeps a multi-turn chat together)."
        ),
    )
    max_prefix_chars: int = Field(
        16384,
        ge=256,
        le=1_048_576,
        description=(
            "Characters of a prompt the router looks at (its start); what follows makes no "
            "routing difference, and each routed request costs time in proportion to this."
        ),
    )
    tracked_chars_per_replica: int = Field(
        2_000_000,
        ge=1024,
        description=(
            "Prompt characters remembered per replica; beyond it the least recently used "
            "are forgotten. Bounds the router's memory (about this many bytes per replica "
            "and caller); about 4 characters make a token."
        ),
    )


class ModelDeploymentConfig(DeploymentConfig):
    """Ray Serve settings of a generative model, with how its replicas are chosen."""

    request_router: RequestRouter | None = Field(
        None,
        description=(
            "How callers (the ingress, RAG pipeline routers) choose a replica. "
            "prefix_aware: requests sharing a prompt prefix (system prompt, tools, document, "
            "earlier turns; never across cache_salt values or LoRA adapters) go to the "
            "replica that has it cached while loads are close; power_of_two: Serve's default, "
            "the less busy of two random replicas. null: "
            f"{DEFAULT_REQUEST_ROUTER}. Makes no difference with one replica. The ingress's "
            "fused model has no router (HTTP reaches its replicas directly): setting one "
            "for it is an error."
        ),
    )
    prefix_router: PrefixRouterConfig | None = Field(
        None,
        description="Settings of the prefix_aware router; null: its defaults.",
    )

    @model_validator(mode="after")
    def _check_router(self) -> ModelDeploymentConfig:
        if self.prefix_router is not None and self.router() != "prefix_aware":
            raise issues_error(
                type(self).__name__,
                [
                    (
                        ("prefix_router",),
                        f"prefix_router settings need request_router: prefix_aware "
                        f"(it is {self.request_router})",
                    )
                ],
            )
        return self

    def router(self) -> RequestRouter:
        """The router in effect: ``request_router``, or the default."""
        return self.request_router or DEFAULT_REQUEST_ROUTER

    def asks_for_a_router(self) -> bool:
        """Whether the config sets the router (the fused model must not)."""
        return self.request_router == "prefix_aware" or self.prefix_router is not None

    def prefix_settings(self) -> PrefixRouterConfig | None:
        """The prefix-aware router's settings; None when this model uses Serve's router."""
        if self.router() != "prefix_aware":
            return None
        return self.prefix_router or PrefixRouterConfig()
