"""What ``device: auto`` means, decided where the engine runs.

The driver that builds the app may be a CPU-only head node or laptop, so its
own hardware says nothing about the workers. Two questions, two answers:

- planning (the app builder): does the Ray cluster have GPUs? Then the
  replicas get GPU bundles (``plan_device``);
- starting (inside the replica): did this replica get GPUs, in its
  placement group or as its own resources? (``resolve_device``).

A replica planned with GPU bundles therefore also starts on GPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from llmserve.literals import Device


def device_from_resources(resources: Mapping[str, float]) -> Device:
    """``gpu`` when the resources include any GPU, else ``cpu``."""
    return "gpu" if resources.get("GPU", 0) > 0 else "cpu"


def summed(bundles: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Resources of several bundles added up."""
    total: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            total[name] = total.get(name, 0.0) + amount
    return total


def plan_device(device: str) -> Device:
    """The device to plan a replica for: ``auto`` follows the connected cluster's resources."""
    if device != "auto":
        return device  # type: ignore[return-value]
    import ray

    if not ray.is_initialized():
        raise RuntimeError(
            "device: auto is decided by the Ray cluster's resources; connect to Ray first"
        )
    return device_from_resources(ray.cluster_resources())


def resolve_device(device: str) -> Device:
    """The device this process's engine runs on: ``auto`` follows the resources it was given.

    In a Ray worker (a Serve replica) that is its placement group's bundles or
    its own GPUs. Outside Ray (``llmserve index`` embedding locally) it is
    the local vLLM build's platform.
    """
    if device != "auto":
        return device  # type: ignore[return-value]
    import ray

    if ray.is_initialized():
        return device_from_resources(_granted_resources())
    from vllm.platforms import current_platform

    return "cpu" if current_platform.is_cpu() else "gpu"


def _granted_resources() -> dict[str, float]:
    import ray
    from ray.util import get_current_placement_group

    pg = get_current_placement_group()
    if pg is not None:
        return summed(pg.bundle_specs)
    gpus = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    return {"GPU": float(len(gpus))}
