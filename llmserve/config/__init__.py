"""llmserve's configuration: one YAML file describes the whole app."""

from llmserve.config.app import AppConfig, RayConfig
from llmserve.config.deployment import AutoscalingConfig, DeploymentConfig
from llmserve.config.errors import ConfigError, ConfigIssue
from llmserve.config.ingress import ApiKey, ApiKeyFromEnv, IngressConfig
from llmserve.config.loader import load_config, validate_config_dict
from llmserve.config.model import Device, EngineConfig, ModelConfig
from llmserve.config.parallel import ParallelismConfig, PlacementStrategy
from llmserve.config.rag import (
    CorpusConfig,
    EmbedderConfig,
    PipelineConfig,
    RerankerConfig,
    RerankerKind,
    RetrieverConfig,
    SearchMode,
)
from llmserve.config.routing import ModelDeploymentConfig, PrefixRouterConfig

__all__ = [
    "ApiKey",
    "ApiKeyFromEnv",
    "AppConfig",
    "AutoscalingConfig",
    "ConfigError",
    "ConfigIssue",
    "CorpusConfig",
    "DeploymentConfig",
    "Device",
    "EmbedderConfig",
    "EngineConfig",
    "IngressConfig",
    "ModelConfig",
    "ModelDeploymentConfig",
    "ParallelismConfig",
    "PipelineConfig",
    "PlacementStrategy",
    "PrefixRouterConfig",
    "RayConfig",
    "RerankerConfig",
    "RerankerKind",
    "RetrieverConfig",
    "SearchMode",
    "load_config",
    "validate_config_dict",
]
