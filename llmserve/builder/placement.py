"""Where an engine's workers go: its replica's placement-group bundles.

Plain functions, so they are tested without Ray. One bundle per
tensor/pipeline-parallel worker (TP x PP), each with that worker's GPU (or
CPU) share. The Serve replica actor's own resources are added to the first
bundle, so the replica sits with rank 0 and vLLM's Ray executor puts the
remaining ranks on the other bundles, possibly on other nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.config.parallel import default_worker_resources
from llmserve.literals import PLACEMENT_STRATEGIES, Device


@dataclass(frozen=True)
class Placement:
    bundles: list[dict[str, float]]
    strategy: str

    def serve_options(self) -> dict:
        """Keyword arguments for ``serve.deployment(...)``."""
        return {
            "placement_group_bundles": self.bundles,
            "placement_group_strategy": self.strategy,
        }


def compute_placement(
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    device: Device,
    strategy: str = "PACK",
    resources_per_worker: dict[str, float] | None = None,
    replica_resources: dict[str, float] | None = None,
) -> Placement:
    """Bundles for one engine replica: ``tp * pp`` workers, rank 0 first."""
    if tensor_parallel_size < 1 or pipeline_parallel_size < 1:
        raise ValueError("parallel sizes must be >= 1")
    if strategy not in PLACEMENT_STRATEGIES:
        raise ValueError(
            f"placement strategy must be one of {PLACEMENT_STRATEGIES}, got {strategy!r}"
        )
    worker = dict(resources_per_worker or default_worker_resources(device))
    bundles = [dict(worker) for _ in range(tensor_parallel_size * pipeline_parallel_size)]
    for name, amount in (replica_resources or {}).items():
        if amount:
            bundles[0][name] = bundles[0].get(name, 0.0) + amount
    return Placement(bundles=bundles, strategy=strategy)
