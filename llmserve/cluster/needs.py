"""What each engine of a config asks Ray for: bundles, strategy, replica bounds.

Plain data derived from what the app builder uses (the Serve options of
``engine_deployment_options`` and the deployment's ``replica_bounds``), so
the fit check and the KubeRay manifest plan exactly what a deploy would request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmserve.builder.options import engine_deployment_options
from llmserve.config import AppConfig, EngineConfig

NO_PLACEMENT_GROUP = "ACTOR"
"""``EngineNeed.strategy`` of a replica without a placement group: its actor is all it needs."""


@dataclass(frozen=True)
class EngineNeed:
    """One engine deployment's resource request."""

    path: str
    """YAML path of the engine, e.g. ``models[0]``."""
    id: str
    device: str
    bundles: list[dict[str, float]]
    """One replica's placement-group bundles; a single actor bundle without a placement group."""
    strategy: str
    tensor_parallel_size: int
    min_replicas: int
    max_replicas: int
    initial_replicas: int

    @property
    def placement_group(self) -> bool:
        return self.strategy != NO_PLACEMENT_GROUP


def engine_needs(config: AppConfig, device_of: Callable[[str], str]) -> list[EngineNeed]:
    """Every vLLM engine of the config; ``device_of`` decides what ``auto`` means."""
    return [engine_need(e.path, e.config, device_of(e.config.device)) for e in config.engines()]


def engine_need(path: str, cfg: EngineConfig, device: str) -> EngineNeed:
    options = engine_deployment_options(cfg, device=device)
    bundles = options.get("placement_group_bundles")
    strategy = options.get("placement_group_strategy", NO_PLACEMENT_GROUP)
    if bundles is None:
        # No placement group: the replica actor alone, with what it reserves.
        actor = options["ray_actor_options"]
        bundles = [{"CPU": float(actor["num_cpus"])}] if actor.get("num_cpus") else []
    replicas = cfg.deployment.replica_bounds()
    return EngineNeed(
        path=path,
        id=cfg.id,
        device=device,
        bundles=[{k: float(v) for k, v in b.items() if v} for b in bundles],
        strategy=strategy,
        tensor_parallel_size=cfg.parallelism.tensor_parallel_size,
        min_replicas=replicas.min,
        max_replicas=replicas.max,
        initial_replicas=replicas.initial,
    )
