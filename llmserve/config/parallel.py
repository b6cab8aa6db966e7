"""How one engine is split across workers (and nodes)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmserve.config.errors import issues_error
from llmserve.literals import Device, PlacementStrategy

RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
"""What a resource name may look like: Ray's own (``GPU``, ``accelerator_type:H100``,
``node:10.0.0.5``, ``TPU-v4-8-head``) all fit, shell metacharacters and spaces do not."""
RESERVED_RESOURCE = "bundle"


def resource_name_problem(name: str) -> str | None:
    """Why Ray, or the command line that gives a node the resource, would misread ``name``.

    Ray takes any string as a resource name, but a custom resource exists only
    once a node declares it with ``ray start --resources JSON``: a shell command
    line in KubeRay's pods (rayStartParams) and in the cluster launcher, where
    ``x$(id)`` would run a command. Ray reserves ``bundle`` and names its
    placement-group resources ``NAME_group_...``, which its autoscaler takes any
    name containing ``_group_`` for.
    """
    if not RESOURCE_NAME.fullmatch(name):
        return (
            "not a valid resource name: letters, digits, '_', '-', '.' and ':' only, "
            "starting with a letter or digit, at most 128 characters"
        )
    if name == RESERVED_RESOURCE or "_group_" in name:
        return "not a valid resource name: Ray reserves 'bundle' and names containing '_group_'"
    return None


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
        description=(
            'Resources per worker bundle; null: {"GPU": 1} on gpu, {"CPU": 1} on cpu. '
            "Names: letters, digits, '_', '-', '.', ':'."
        ),
    )

    @model_validator(mode="after")
    def _check_resource_names(self) -> ParallelismConfig:
        names = self.resources_per_worker or {}
        issues = [
            (("resources_per_worker", name), problem)
            for name in names
            if (problem := resource_name_problem(name)) is not None
        ]
        if issues:
            raise issues_error(type(self).__name__, issues)
        return self

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
