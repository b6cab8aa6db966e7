"""How one engine is split across workers (and nodes)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from llmserve.literals import Device, PlacementStrategy


def default_worker_resources(device: Device) -> dict[str, float]:
    """One worker's bundle when ``resources_per_worker`` is not set: a GPU, or a CPU."""
    return {"GPU": 1.0} if device == "gpu" else {"CPU": 1.0}


class ParallelismConfig(BaseModel):
    """Tensor/pipeline parallelism and the Ray placement group for the workers.

    One placement-group bundle is reserved per worker, so an engine needs
    ``world_size`` bundles of ``resources_per_worker`` each.
    """

    model_config = ConfigDict(extra="forbid")

    tensor_parallel_size: int = Field(
        1, ge=1, description="Workers that split each layer (usually GPUs within one node)."
    )
    pipeline_parallel_size: int = Field(
        1, ge=1, description="Stages the layers are split into (can span nodes)."
    )
    placement_strategy: PlacementStrategy = Field(
        "PACK", description="Ray placement group strategy for the worker bundles."
    )
    resources_per_worker: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        None,
        description='Resources per worker bundle; null: {"GPU": 1} on gpu, {"CPU": 1} on cpu.',
    )

    @property
    def world_size(self) -> int:
        """Total number of workers: tensor_parallel_size * pipeline_parallel_size."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def worker_resources(self, device: Device) -> dict[str, float]:
        """Resources of one worker bundle once the device is known."""
        if self.resources_per_worker is not None:
            return dict(self.resources_per_worker)
        return default_worker_resources(device)

    def placement_bundles(self, device: Device) -> list[dict[str, float]]:
        """One bundle per worker, in rank order."""
        return [self.worker_resources(device) for _ in range(self.world_size)]
