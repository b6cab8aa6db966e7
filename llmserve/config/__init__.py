"""llmserve's configuration: one YAML file describes the whole app."""

from llmserve.config.app import AppConfig, AppEngine, RayConfig
from llmserve.config.deployment import AutoscalingConfig, DeploymentConfig, ReplicaBounds
from llmserve.config.errors import ConfigError, ConfigIssue
from llmserve.config.ingress import IngressConfig
from llmserve.config.keys import ApiKey, ApiKeyFromEnv
from llmserve.config.limits import EmbedderLimits, GenerationLimits, RerankerLimits
from llmserve.config.loader import load_config, validate_config_dict
from llmserve.config.model import EngineConfig, ModelConfig
from llmserve.config.parallel import ParallelismConfig
from llmserve.config.rag import (
    CorpusConfig,
    EmbedderConfig,
    PipelineConfig,
    RerankerConfig,
    RerankerKind,
    RetrieverConfig,
)
from llmserve.config.tenants import TenantConfig

__all__ = [
    "ApiKey",
    "ApiKeyFromEnv",
    "AppConfig",
    "AppEngine",
    "AutoscalingConfig",
    "ConfigError",
    "ConfigIssue",
    "CorpusConfig",
    "DeploymentConfig",
    "EmbedderConfig",
    "EmbedderLimits",
    "EngineConfig",
    "GenerationLimits",
    "IngressConfig",
    "ModelConfig",
    "ParallelismConfig",
    "PipelineConfig",
    "RayConfig",
    "ReplicaBounds",
    "RerankerConfig",
    "RerankerLimits",
    "RerankerKind",
    "RetrieverConfig",
    "TenantConfig",
    "load_config",
    "validate_config_dict",
]
