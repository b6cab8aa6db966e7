"""vLLM-backed components: the shared engine settings and generative models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmserve.config.common import EnvVarName, EnvVarValue, Identifier
from llmserve.config.deployment import DeploymentConfig
from llmserve.config.engine_args import check_engine_kwargs
from llmserve.config.errors import issues_error
from llmserve.config.limits import GenerationLimits
from llmserve.config.lora import LORA_ENGINE_ARGS, LoRAConfig
from llmserve.config.parallel import ParallelismConfig
from llmserve.config.serving_args import ENGINE_SERVING_OPTIONS, check_serving_options
from llmserve.literals import DeviceSetting

BUILTIN_PREFIX = "builtin:"
"""A ``source`` starting with this names a model that ships with llmserve (``llmserve.models``)."""


def is_builtin(source: str) -> bool:
    """True when ``source`` names a built-in model (``builtin:<name>``)."""
    return source.startswith(BUILTIN_PREFIX)


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
    device: DeviceSetting = Field(
        "auto", description="Where the engine runs; auto picks gpu if present."
    )
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
        return is_builtin(self.source)


class ModelConfig(EngineConfig):
    """A generative LLM: chat and text completions, Responses, tokenize and detokenize."""

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
        return not fused and self.deployment.replica_bounds().max > 1

    serving: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "vLLM serving options, named like `vllm serve` flags: chat_template, tool_call_parser, "
            "enable_auto_tool_choice, reasoning_parser, response_role, ...; checked against "
            "vLLM's FrontendArgs. HTTP server flags (host, port, api_key, ssl_*) are refused."
        ),
    )

    lora: LoRAConfig | None = Field(
        None,
        description=(
            "LoRA adapters served by this model's replicas, each under its own model id "
            "(listed in /v1/models with `parent` set to this model's id)."
        ),
    )

    limits: GenerationLimits = Field(
        default_factory=GenerationLimits,
        description=(
            "Per-request cost caps (n, prompts, max_tokens, stop, logprobs), checked by the "
            "ingress before the request queues; past one, a 400 names the field and the cap. "
            "They apply to the model's LoRA adapters and to pipelines it generates for too."
        ),
    )

    @field_validator("serving")
    @classmethod
    def _check_serving(cls, value: dict[str, Any]) -> dict[str, Any]:
        checked, issues = check_serving_options(value)
        if issues:
            raise issues_error(cls.__name__, issues)
        return checked

    @model_validator(mode="after")
    def _check_serving_with_engine(self) -> ModelConfig:
        issues = [
            (("serving", name), f"'{name}' is also set in engine_kwargs; set it in one place")
            for name in ENGINE_SERVING_OPTIONS
            if name in self.serving and name in self.engine_kwargs
        ]
        if self.serving.get("enable_log_outputs") and not self.engine_kwargs.get(
            "enable_log_requests"
        ):
            issues.append(
                (
                    ("serving", "enable_log_outputs"),
                    "enable_log_outputs needs engine_kwargs.enable_log_requests: true",
                )
            )
        if self.lora is not None:
            issues += [
                (("engine_kwargs", name), f"'{name}' is set by the lora block; remove it here")
                for name in LORA_ENGINE_ARGS
                if name in self.engine_kwargs
            ]
        if issues:
            raise issues_error(type(self).__name__, issues)
        return self

    def engine_serving_options(self) -> dict[str, Any]:
        """Serving options that vLLM reads from its engine args (the reasoning parser)."""
        return {k: v for k, v in self.serving.items() if k in ENGINE_SERVING_OPTIONS}

    def frontend_options(self) -> dict[str, Any]:
        """Serving options for vLLM's ``FrontendArgs``."""
        return {k: v for k, v in self.serving.items() if k not in ENGINE_SERVING_OPTIONS}
