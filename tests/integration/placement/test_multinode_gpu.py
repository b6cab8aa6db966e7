"""Multi-node GPU placement of engine replicas, on a simulated cluster.

vLLM's GPU path cannot run here, so these tests check what llmserve owns:
the Serve options that ``engine_deployment_options`` builds from the shipped
GPU configs. They run on a local multi-node Ray cluster whose GPUs are only
logical resources (Ray schedules them like real ones), and deploy a test
double in place of ``LLMServer`` with exactly those options. In its
constructor the double does what vLLM's Ray executor does with the replica's
placement group: one GPU actor per bundle (rank 0 included: the replica holds
no GPU itself), each pinned with ``PlacementGroupSchedulingStrategy``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmserve.builder.options import deployment_name, engine_deployment_options
from llmserve.config import ModelConfig, load_config
from tests.helpers import free_port

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
GPUS_PER_NODE = 8
DEPLOY_TIMEOUT_S = 90


class RankWorker:
    """One engine worker (a vLLM ``RayWorkerWrapper`` stand-in)."""

    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"node": ctx.get_node_id(), "gpus": ctx.get_accelerator_ids()["GPU"]}


class EngineDouble:
    """Replaces ``LLMServer``: fills the replica's placement group like vLLM's Ray executor."""

    async def __init__(self, tensor_parallel_size: int, pipeline_parallel_size: int):
        import os

        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pg = ray.util.get_current_placement_group()
        if pg is None:
            raise RuntimeError("the replica is not in a placement group")
        table = ray.util.placement_group_table(pg)
        worker_cls = ray.remote(RankWorker)
        self.workers = [  # kept alive, as the engine keeps its workers
            worker_cls.options(
                num_cpus=0,
                num_gpus=1,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=pg, placement_group_bundle_index=i
                ),
            ).remote()
            for i in range(len(pg.bundle_specs))
        ]
        self.info = {
            "world_size": tensor_parallel_size * pipeline_parallel_size,
            "replica_node": ray.get_runtime_context().get_node_id(),
            "bundles": pg.bundle_specs,
            "strategy": table["strategy"],
            "bundle_nodes": {int(i): node for i, node in table["bundles_to_node_id"].items()},
            "ranks": [await w.where.remote() for w in self.workers],
            "nccl_debug": os.environ.get("NCCL_DEBUG"),
        }

    def placement(self) -> dict[str, Any]:
        return self.info


@dataclass
class SimulatedCluster:
    head: str
    gpu_nodes: list[str]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SimulatedCluster]:
    """A CPU-only head plus two nodes with 8 logical GPUs each; Serve on a free port."""
    import ray
    from ray import cloudpickle, serve
    from ray.cluster_utils import Cluster

    # Ship the double by value: workers cannot import this test module by name.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
    )
    try:
        gpu_nodes = [cluster.add_node(num_cpus=1, num_gpus=GPUS_PER_NODE) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        serve.start(proxy_location="HeadOnly", http_options={"port": free_port()})
        yield SimulatedCluster(
            head=cluster.head_node.node_id, gpu_nodes=[n.node_id for n in gpu_nodes]
        )
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def deploy(cluster: SimulatedCluster) -> Iterator:
    """Deploy the double with a model's real Serve options; returns its placement report."""
    from ray import serve

    apps: list[str] = []

    def run(model: ModelConfig) -> dict[str, Any]:
        name = f"placement-{model.id}-{len(apps)}-{time.monotonic_ns()}"
        apps.append(name)
        par = model.parallelism
        app = (
            serve.deployment(EngineDouble)
            .options(name=deployment_name("llm", model.id), **engine_deployment_options(model))
            .bind(par.tensor_parallel_size, par.pipeline_parallel_size)
        )
        # serve.run waits for a healthy replica without a deadline; an
        # unplaceable placement group must fail the test, not hang it.
        with ThreadPoolExecutor(1) as pool:
            handle = pool.submit(serve.run, app, name=name, route_prefix=None).result(
                timeout=DEPLOY_TIMEOUT_S
            )
        return handle.placement.remote().result(timeout_s=30)

    yield run
    for name in apps:  # free the GPUs for the next test
        serve.delete(name)


def _model(path: str, **parallelism: Any) -> ModelConfig:
    model = load_config(CONFIGS / path).models[0]
    if parallelism:
        par = model.parallelism.model_copy(update=parallelism)
        model = model.model_copy(update={"parallelism": par})
    return model


def _check_every_rank_placed(info: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """Common checks; returns each rank's node id, in bundle order."""
    bundles = options["placement_group_bundles"]
    assert info["bundles"] == bundles
    assert info["strategy"] == options["placement_group_strategy"]
    ranks = info["ranks"]
    assert len(ranks) == len(bundles) == info["world_size"]
    nodes = [rank["node"] for rank in ranks]
    # Every rank runs where Ray reserved its bundle, on its own GPU.
    assert nodes == [info["bundle_nodes"][i] for i in range(len(bundles))]
    assert all(len(rank["gpus"]) == 1 for rank in ranks)
    assert len({(rank["node"], rank["gpus"][0]) for rank in ranks}) == len(ranks)
    # Serve pins the replica actor to bundle 0, i.e. next to rank 0.
    assert info["replica_node"] == info["bundle_nodes"][0] == nodes[0]
    return nodes


def test_tp8_pp2_replica_spans_two_gpu_nodes(cluster: SimulatedCluster, deploy) -> None:
    model = _model("gpu-tp8-pp2.yaml")
    assert model.device == "gpu"
    options = engine_deployment_options(model)
    assert len(options["placement_group_bundles"]) == 16

    info = deploy(model)

    nodes = _check_every_rank_placed(info, options)
    assert info["strategy"] == model.parallelism.placement_strategy == "PACK"
    assert Counter(nodes) == {node: GPUS_PER_NODE for node in cluster.gpu_nodes}
    assert cluster.head not in nodes
    # vLLM orders its Ray workers by node, the driver's (replica's) node
    # first: each pipeline stage of 8 TP ranks then shares one node, and
    # only the activations between the two stages cross the network.
    by_node = sorted(nodes, key=lambda node: node != info["replica_node"])
    tp = model.parallelism.tensor_parallel_size
    stages = [by_node[i : i + tp] for i in range(0, len(by_node), tp)]
    assert [len(set(stage)) for stage in stages] == [1, 1]
    assert stages[0][0] == info["replica_node"]
    # The config's env_vars reach the replica through its runtime_env.
    assert info["nccl_debug"] == "WARN"


def test_tp2_strict_pack_keeps_both_ranks_on_one_node(cluster: SimulatedCluster, deploy) -> None:
    model = _model("gpu-tp2.yaml")
    options = engine_deployment_options(model)
    assert options["placement_group_bundles"] == [{"GPU": 1.0}, {"GPU": 1.0}]

    info = deploy(model)

    nodes = _check_every_rank_placed(info, options)
    assert info["strategy"] == model.parallelism.placement_strategy == "STRICT_PACK"
    assert len(set(nodes)) == 1
    assert nodes[0] in cluster.gpu_nodes


def test_tp2_strict_spread_puts_ranks_on_different_nodes(cluster: SimulatedCluster, deploy) -> None:
    """The contrast case: the strategy comes from the config, not from a default."""
    model = _model("gpu-tp2.yaml", placement_strategy="STRICT_SPREAD")
    options = engine_deployment_options(model)

    info = deploy(model)

    nodes = _check_every_rank_placed(info, options)
    assert info["strategy"] == "STRICT_SPREAD"
    assert sorted(nodes) == sorted(cluster.gpu_nodes)


@pytest.mark.parametrize(
    ("strategy", "fits"),
    [("PACK", True), ("STRICT_PACK", False), ("SPREAD", True), ("STRICT_SPREAD", False)],
)
def test_which_strategies_fit_tp8_pp2_on_two_8_gpu_nodes(
    cluster: SimulatedCluster, strategy: str, fits: bool
) -> None:
    """What the gpu-tp8-pp2.yaml comments claim about the four strategies."""
    from ray.util import placement_group, remove_placement_group

    options = engine_deployment_options(_model("gpu-tp8-pp2.yaml", placement_strategy=strategy))
    pg = placement_group(
        options["placement_group_bundles"], strategy=options["placement_group_strategy"]
    )
    try:
        assert pg.wait(timeout_seconds=10 if fits else 2) is fits
    finally:
        remove_placement_group(pg)
