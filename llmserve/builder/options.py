"""Serve deployment options derived from config: names, replicas, placement."""

from __future__ import annotations

import re
from typing import Any

from llmserve.builder.placement import compute_placement
from llmserve.config import EngineConfig, ModelConfig
from llmserve.engine.device import plan_device


def deployment_name(kind: str, id_: str) -> str:
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', id_)}"


def engine_deployment_options(
    cfg: EngineConfig, retry_after_s: float = 1, device: str | None = None
) -> dict[str, Any]:
    """Serve options for a vLLM-backed deployment, placement group included.

    A placement group is needed when an engine has several workers (TP/PP)
    or runs on GPU; a single CPU worker just runs in the replica actor.
    ``device`` overrides ``cfg.device``; ``auto`` follows the connected
    Ray cluster's resources, not this process's hardware.
    """
    options = cfg.deployment.to_serve_options(retry_after_s)
    actor = dict(options.pop("ray_actor_options", {}))
    if cfg.env_vars:
        actor["runtime_env"] = {"env_vars": dict(cfg.env_vars)}
    device = plan_device(device or cfg.device)
    par = cfg.parallelism
    if device == "gpu" or par.world_size > 1:
        placement = compute_placement(
            par.tensor_parallel_size,
            par.pipeline_parallel_size,
            device,
            par.placement_strategy,
            par.resources_per_worker,
            replica_resources={"CPU": actor.get("num_cpus", 0)},
        )
        options.update(placement.serve_options())
    options["ray_actor_options"] = actor
    return options


def request_router_options(model: ModelConfig) -> dict[str, Any]:
    """Serve's ``request_router_config`` for a model's deployment; {} for Serve's own
    router. Every handle to the deployment routes with it: the ingress's, and the
    RAG pipeline routers' that generate with this model."""
    settings = model.deployment.prefix_settings()
    if settings is None:
        return {}
    from ray.serve.config import RequestRouterConfig

    from llmserve.servers.routing.router import ROUTER_CLASS

    kwargs = {"base_model": model.id, **settings.model_dump()}
    config = RequestRouterConfig(request_router_class=ROUTER_CLASS, request_router_kwargs=kwargs)
    return {"request_router_config": config}


def router_version(options: dict[str, Any]) -> dict[str, Any] | None:
    """What of ``request_router_options`` must be in the *callers'* versions: a handle
    builds its router once, so a changed router takes effect by restarting them."""
    config = options.get("request_router_config")
    if config is None:
        return None
    return {"class": config.request_router_class, "kwargs": config.request_router_kwargs}
