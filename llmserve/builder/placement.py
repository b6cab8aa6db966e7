"""Where an engine's workers go: placement-group bundles and CPU core binding.

Plain functions, so they are tested without Ray. One bundle per
tensor/pipeline-parallel worker (TP x PP), each with that worker's GPU (or
CPU) share. The Serve replica actor's own resources are added to the first
bundle, so the replica sits with rank 0 and vLLM's Ray executor puts the
remaining ranks on the other bundles, possibly on other nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Device = Literal["cpu", "gpu"]
STRATEGIES = ("PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD")


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


def default_worker_resources(device: Device) -> dict[str, float]:
    return {"GPU": 1.0} if device == "gpu" else {"CPU": 1.0}


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
    if strategy not in STRATEGIES:
        raise ValueError(f"placement strategy must be one of {STRATEGIES}, got {strategy!r}")
    worker = dict(resources_per_worker or default_worker_resources(device))
    bundles = [dict(worker) for _ in range(tensor_parallel_size * pipeline_parallel_size)]
    for name, amount in (replica_resources or {}).items():
        if amount:
            bundles[0][name] = bundles[0].get(name, 0.0) + amount
    return Placement(bundles=bundles, strategy=strategy)


def cpu_threads_bind(world_size: int, cores: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for vLLM's CPU backend: one core list per rank.

    Cores are split into equal contiguous slices, e.g. 2 ranks on cores
    [0, 1, 2, 3] -> ``"0-1|2-3"``. vLLM's CPU TP needs every rank on its own cores.
    """
    cores = sorted(cores)
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    if len(cores) < world_size:
        raise ValueError(
            f"{world_size} CPU workers need {world_size} cores, only {len(cores)} available"
        )
    per_rank = len(cores) // world_size
    slices = [cores[i * per_rank : (i + 1) * per_rank] for i in range(world_size)]
    return "|".join(_core_list(s) for s in slices)


def _core_list(cores: list[int]) -> str:
    if cores == list(range(cores[0], cores[-1] + 1)) and len(cores) > 1:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(c) for c in cores)
