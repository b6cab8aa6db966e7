"""vLLM-backed components: the shared engine settings and generative models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmserve.config.common import EnvVarName, EnvVarValue, Identifier
from llmserve.config.deployment import DeploymentConfig
from llmserve.config.engine_args import check_engine_kwargs
from llmserve.config.errors import issues_error
from llmserve.config.parallel import ParallelismConfig

Device = Literal["auto", "cpu", "gpu"]

BUILTIN_PREFIX = "builtin:"


class EngineConfig(BaseModel):
    """Settings shared by every component that runs a vLLM engine."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier = Field(..., description="Name the component is served under (no whitespace).")
    source: str = Field(
        ...,
        min_length=1,
        description="builtin:<name>, a local folder or a Hugging Face id; given to vLLM as is.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra vLLM AsyncEngineArgs, e.g. max_model_len."
    )
    device: Device = Field("auto", description="Where the engine runs; auto picks gpu if present.")
    parallelism: ParallelismConfig = Field(
        default_factory=ParallelismConfig, description="Tensor/pipeline parallel layout."
    )
    deployment: DeploymentConfig = Field(
        default_factory=DeploymentConfig, description="Ray Serve settings of the replicas."
    )
    env_vars: dict[EnvVarName, EnvVarValue] = Field(
        default_factory=dict,
        description="Environment of the replica and its engine, e.g. VLLM_CPU_KVCACHE_SPACE.",
    )

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        if value == BUILTIN_PREFIX:
            raise ValueError("'builtin:' needs a model name, e.g. builtin:smollm2-135m-instruct")
        return value

    @field_validator("engine_kwargs")
    @classmethod
    def _check_engine_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        checked, issues = check_engine_kwargs(value)
        if issues:
            raise issues_error(cls.__name__, issues)
        return checked

    @property
    def is_builtin(self) -> bool:
        """True when ``source`` names a model that ships with llmserve."""
        return self.source.startswith(BUILTIN_PREFIX)


class ModelConfig(EngineConfig):
    """A generative LLM, served on /v1/chat/completions and /v1/completions."""

    model_config = ConfigDict(extra="forbid")

    request_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Longest a request may take end to end; null: ingress.request_timeout_s.",
    )
    resume_streams: bool | None = Field(
        None,
        description=(
            "When the replica serving a stream dies mid-way, continue the stream on another "
            "replica (exact at temperature 0; plain text streams only). null: on when the model "
            "can have more than one replica and is not the ingress's fused model."
        ),
    )

    def resumes_streams(self, fused: bool) -> bool:
        if self.resume_streams is not None:
            return self.resume_streams and not fused
        d = self.deployment
        most = d.autoscaling_config.max_replicas if d.autoscaling_config else d.num_replicas
        return not fused and (most or 1) > 1
