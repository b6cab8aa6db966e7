"""Ray Serve deployment settings shared by every served component."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmserve.config.errors import issues_error


class ReplicaBounds(NamedTuple):
    """How many replicas a deployment may have, and how many it starts with."""

    min: int
    max: int
    initial: int


class AutoscalingConfig(BaseModel):
    """Ray Serve autoscaling: replicas follow the number of ongoing requests."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0, description="Fewest replicas; 0 allows scaling to zero.")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    initial_replicas: int | None = Field(
        None, ge=0, description="Replicas to start with; null starts with min_replicas."
    )
    target_ongoing_requests: float = Field(
        2, gt=0, description="Ongoing requests per replica that autoscaling aims for."
    )
    upscale_delay_s: float = Field(
        5, ge=0, description="Seconds the load must stay high before adding replicas."
    )
    downscale_delay_s: float = Field(
        30, ge=0, description="Seconds the load must stay low before removing replicas."
    )

    @model_validator(mode="after")
    def _check_range(self) -> AutoscalingConfig:
        issues = []
        if self.min_replicas > self.max_replicas:
            issues.append(
                (
                    ("min_replicas",),
                    f"min_replicas ({self.min_replicas}) is greater than "
                    f"max_replicas ({self.max_replicas})",
                )
            )
        elif self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            issues.append(
                (
                    ("initial_replicas",),
                    f"initial_replicas ({self.initial_replicas}) must be between "
                    f"min_replicas ({self.min_replicas}) and max_replicas ({self.max_replicas})",
                )
            )
        if issues:
            raise issues_error(type(self).__name__, issues)
        return self


class DeploymentConfig(BaseModel):
    """How Ray Serve runs the replicas of one component.

    Every queue is bounded. A replica runs at most ``max_ongoing_requests``
    requests; up to ``max_queued_requests`` more wait for a slot; anything
    beyond that is refused at once with HTTP 429 and ``Retry-After``. These
    defaults fit an LLM engine, which batches many sequences at a time; the
    other components use their own defaults (see their ``deployment`` fields).
    """

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | None = Field(
        None,
        ge=1,
        description="Fixed number of replicas; null means 1, or autoscaling if that is set.",
    )
    autoscaling_config: AutoscalingConfig | None = Field(
        None, description="Scale replicas with load instead of a fixed num_replicas."
    )
    max_ongoing_requests: int = Field(
        64,
        gt=0,
        description=(
            "Requests one replica runs at once. For an LLM engine this is the batch it may "
            "fill: at least the engine's max_num_seqs, or the batch never fills."
        ),
    )
    max_queued_requests: int = Field(
        64,
        ge=0,
        description=(
            "Requests that may wait for a free slot, per caller; more are refused with 429. "
            "Bounded: a long queue only turns overload into timeouts."
        ),
    )
    health_check_period_s: float = Field(
        10, gt=0, description="Seconds between replica health checks."
    )
    health_check_timeout_s: float = Field(
        30, gt=0, description="Seconds a health check may take before the replica is restarted."
    )
    graceful_shutdown_timeout_s: float = Field(
        20, ge=0, description="Seconds a stopping replica gets to finish in-flight requests."
    )
    max_surge_percent: int = Field(
        100,
        ge=0,
        le=100,
        description=(
            "Extra replicas (percent of the target, rounded up) a restart by `llmserve deploy` may "
            "start before stopping old ones (Serve's max_surge_percent). 100: old replicas serve "
            "until their replacements are ready, which needs room for both at once (for a GPU "
            "model, spare GPUs). 0: old replicas stop first, so a one-replica deployment is "
            "unavailable while its replacement starts."
        ),
    )
    # Fractional or zero so that a whole app fits on a laptop: the heavy work
    # runs in engine workers that reserve their own resources.
    num_cpus: float = Field(0, ge=0, description="CPUs reserved for the replica actor itself.")

    @model_validator(mode="after")
    def _check_scaling(self) -> DeploymentConfig:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise issues_error(
                type(self).__name__,
                [(("num_replicas",), "set either num_replicas or autoscaling_config, not both")],
            )
        return self

    def replica_bounds(self) -> ReplicaBounds:
        """Fewest, most and starting replicas, as Serve reads them from ``to_serve_options``.

        A fixed ``num_replicas`` (null: 1) is all three; with autoscaling, the
        range, starting at ``initial_replicas`` (null: ``min_replicas``).
        """
        scaling = self.autoscaling_config
        if scaling is None:
            n = self.num_replicas or 1
            return ReplicaBounds(n, n, n)
        initial = scaling.initial_replicas
        return ReplicaBounds(
            scaling.min_replicas,
            scaling.max_replicas,
            scaling.min_replicas if initial is None else initial,
        )

    def limits(self) -> tuple[int, int]:
        """``(max_ongoing_requests, max_queued_requests)``, for a gate outside Serve."""
        return self.max_ongoing_requests, self.max_queued_requests

    def to_serve_options(self, retry_after_s: float = 1) -> dict[str, Any]:
        """Keyword arguments for ``serve.deployment(...)`` or ``Deployment.options(...)``.

        Requests Serve itself refuses over HTTP (queue full) get 429 with
        ``Retry-After``; handle callers get ``BackPressureError`` at once.
        """
        options: dict[str, Any] = {}
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.replica_bounds().initial
        options.update(
            max_ongoing_requests=self.max_ongoing_requests,
            max_queued_requests=self.max_queued_requests,
            health_check_period_s=self.health_check_period_s,
            health_check_timeout_s=self.health_check_timeout_s,
            graceful_shutdown_timeout_s=self.graceful_shutdown_timeout_s,
            max_surge_percent=self.max_surge_percent,
            backpressure_config={"status_code": 429, "retry_after_s": retry_after_s},
            ray_actor_options={"num_cpus": self.num_cpus},
        )
        return options


class PoolingDeploymentConfig(DeploymentConfig):
    """Ray Serve settings of an embedding or reranking engine.

    A pooling request is one short forward pass and concurrent ones are
    batched, so fewer run at once than on a generative engine.
    """

    max_ongoing_requests: int = Field(
        32, gt=0, description="Requests one replica runs at once (batched into engine calls)."
    )
    max_queued_requests: int = Field(
        64, ge=0, description="Requests that may wait for a free slot; more get 429."
    )


class RetrieverDeploymentConfig(DeploymentConfig):
    """Ray Serve settings of a retriever: CPU work (LanceDB search) per request."""

    max_ongoing_requests: int = Field(
        16,
        gt=0,
        description="Searches one replica runs at once; they share the replica's CPU.",
    )
    max_queued_requests: int = Field(
        32, ge=0, description="Searches that may wait for a free slot; more get 429."
    )


class PipelineDeploymentConfig(DeploymentConfig):
    """Ray Serve settings of a RAG pipeline router.

    A pipeline request holds its slot while the generator streams the answer,
    so its limits should match the generator's. When the generator is the
    ingress's fused model, the router runs inside the ingress and these
    limits are enforced there.
    """


class IngressDeploymentConfig(DeploymentConfig):
    """Ray Serve settings of the HTTP ingress.

    The ingress only relays, so its slots are many: every request, streams
    included, holds one, and ``/health`` must find one free at any load. The
    models behind it enforce their own, smaller limits.
    """

    max_ongoing_requests: int = Field(
        1024,
        gt=0,
        description=(
            "HTTP requests one ingress replica holds at once, all models and /health "
            "together; keep it above the sum of the limits of what it serves."
        ),
    )
    max_queued_requests: int = Field(
        256, ge=0, description="HTTP requests that may wait for an ingress slot; more get 429."
    )
