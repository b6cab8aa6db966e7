"""Serve deployment options derived from config: names, replicas, placement."""

from __future__ import annotations

import re
from typing import Any

from llmserve.builder.placement import compute_placement
from llmserve.config import EngineConfig
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
