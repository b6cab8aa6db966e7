"""The whole app: every served component, plus app-wide Ray and cache settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)

from llmserve.config.errors import Loc, format_loc, issues_error, readable_errors
from llmserve.config.ingress import IngressConfig
from llmserve.config.model import EngineConfig, ModelConfig
from llmserve.config.rag import EmbedderConfig, PipelineConfig, RerankerConfig, RetrieverConfig
from llmserve.config.references import find_reference_issues

ENGINE_SECTIONS = ("models", "embedders", "rerankers")
"""The sections of an ``AppConfig`` whose items each run a vLLM engine."""


@dataclass(frozen=True)
class AppEngine:
    """One vLLM engine of an app and where the config defines it."""

    section: str
    index: int
    config: EngineConfig

    @property
    def path(self) -> str:
        """Its YAML path, e.g. ``models[0]``, as config errors name it."""
        return format_loc((self.section, self.index))


def default_home() -> Path:
    """llmserve's cache folder when a config sets no ``home``: ``$LLMSERVE_HOME`` or
    ``~/.cache/llmserve``."""
    return Path(os.environ.get("LLMSERVE_HOME") or "~/.cache/llmserve").expanduser()


class RayConfig(BaseModel):
    """Which Ray cluster the app runs on."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None,
        description="Address of a running Ray cluster, e.g. ray://host:10001; null starts one.",
    )
    num_cpus: float | None = Field(
        None, gt=0, description="CPUs given to the local Ray; null detects them."
    )
    direct_ingress: bool = Field(
        True,
        description=(
            "Local Ray only: HAProxy sends HTTP straight to the ingress replicas "
            "(Serve's HAProxy + direct ingress mode) instead of through a Python proxy."
        ),
    )
    separate_user_code_thread: bool = Field(
        False,
        description=(
            "Local Ray only: run deployment code on its own thread (Serve's default). "
            "Off runs it on the replica's event loop, one thread hop less per chunk."
        ),
    )
    serve_control_loop_interval_s: float = Field(
        0.5,
        gt=0,
        le=5,
        description=(
            "Seconds between the Serve controller's control-loop passes "
            "(RAY_SERVE_CONTROL_LOOP_INTERVAL_S; Serve's default is 0.1). A pass reacts to "
            "replica deaths, health checks and autoscaling decisions. With 0.5 the controller "
            "used 1.7 % of a core idle on the tiny app, 3.9 % with 0.1; a dead replica's "
            "replacement starts up to 0.4 s later."
        ),
    )
    metrics_report_interval_s: float = Field(
        60,
        gt=0,
        description=(
            "Seconds between Ray's own metric exports from every process to its metrics agent "
            "(Ray's metrics_report_interval_ms; Ray's default is 10). Only Ray's metrics "
            "(ray_serve_* on Ray's metrics port and dashboard) wait longer; llmserve's /metrics, "
            "vLLM's metrics and Serve's autoscaling do not use this path. 60 halved the idle "
            "CPU of the GCS (2.1 to 0.9 % of a core) and the dashboard agent (1.2 to 0.6 %)."
        ),
    )

    def process_env(self) -> dict[str, str]:
        """Environment that sets the idle-cost settings above in Ray's and Serve's processes."""
        return {
            "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": str(self.serve_control_loop_interval_s),
            "RAY_metrics_report_interval_ms": str(int(self.metrics_report_interval_s * 1000)),
        }


class AppConfig(BaseModel):
    """Root of a llmserve config file."""

    model_config = ConfigDict(extra="forbid")

    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster settings.")
    home: str | None = Field(
        None,
        description="Cache for prepared models; null: $LLMSERVE_HOME or ~/.cache/llmserve.",
    )
    ingress: IngressConfig = Field(
        default_factory=IngressConfig, description="The OpenAI-compatible HTTP server."
    )
    models: list[ModelConfig] = Field(default_factory=list, description="Generative LLMs.")
    embedders: list[EmbedderConfig] = Field(default_factory=list, description="Embedding models.")
    rerankers: list[RerankerConfig] = Field(default_factory=list, description="Reranking models.")
    retrievers: list[RetrieverConfig] = Field(
        default_factory=list, description="Document indexes that pipelines search."
    )
    pipelines: list[PipelineConfig] = Field(
        default_factory=list, description="RAG pipelines, each served as a model name."
    )

    @model_validator(mode="wrap")
    @classmethod
    def _check_references(
        cls, data: Any, handler: ModelWrapValidatorHandler[AppConfig]
    ) -> AppConfig:
        try:
            app = handler(data)
        except ValidationError as exc:
            # Field errors stop pydantic before any "after" validator, so check
            # references on the raw data to still report every problem at once.
            extra = find_reference_issues(data) if isinstance(data, dict) else []
            if not extra:
                raise
            raise issues_error(cls.__name__, [*readable_errors(exc, cls), *extra]) from None
        issues = find_reference_issues(app.model_dump()) + _fused_router_issues(app)
        if issues:
            raise issues_error(cls.__name__, issues)
        return app

    def served_ids(self) -> list[str]:
        """Every id clients can call, in config order: models, embedders, rerankers, pipelines."""
        groups = (self.models, self.embedders, self.rerankers, self.pipelines)
        return [item.id for group in groups for item in group]

    def engines(self) -> list[AppEngine]:
        """Every vLLM engine (models, embedders, rerankers), in config order."""
        return [
            AppEngine(section, i, engine)
            for section in ENGINE_SECTIONS
            for i, engine in enumerate(getattr(self, section))
        ]

    def get_model(self, id: str) -> ModelConfig:
        return _by_id(self.models, id, "model")

    def get_embedder(self, id: str) -> EmbedderConfig:
        return _by_id(self.embedders, id, "embedder")

    def get_reranker(self, id: str) -> RerankerConfig:
        return _by_id(self.rerankers, id, "reranker")

    def get_retriever(self, id: str) -> RetrieverConfig:
        return _by_id(self.retrievers, id, "retriever")

    def get_pipeline(self, id: str) -> PipelineConfig:
        return _by_id(self.pipelines, id, "pipeline")

    def home_dir(self) -> Path:
        """The cache folder: ``home``, else ``$LLMSERVE_HOME``, else ``~/.cache/llmserve``."""
        return Path(self.home).expanduser() if self.home else default_home()


def _fused_router_issues(app: AppConfig) -> list[tuple[Loc, str]]:
    """The fused model runs inside the ingress replicas, which HTTP reaches through
    HAProxy, not through a Serve handle: no request router ever chooses between
    them. Its ``request_router: null`` (the default) means none; asking for one
    is an error."""
    for i, model in enumerate(app.models):
        deployment = model.deployment
        if model.id == app.ingress.fused_model and deployment.asks_for_a_router():
            asked = [
                name
                for name in ("request_router", "prefix_router")
                if getattr(deployment, name) not in (None, "power_of_two")
            ]
            return [
                (
                    ("models", i, "deployment", name),
                    "this model is the ingress's fused_model: its engine runs in the ingress "
                    "replicas, which HTTP reaches directly, so no request router chooses "
                    "between them; remove it (or unfuse the model)",
                )
                for name in asked
            ]
    return []


def _by_id(items: list, id: str, kind: str) -> Any:
    for item in items:
        if item.id == id:
            return item
    raise KeyError(f"no {kind} with id '{id}'")
