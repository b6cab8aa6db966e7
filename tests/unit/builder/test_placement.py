"""Placement-group bundles and the Serve options of engine deployments.

No Ray here: these are the plain functions that decide where engine workers go.
"""

from __future__ import annotations

import typing

import pytest

from llmserve.builder.options import engine_deployment_options
from llmserve.builder.placement import compute_placement
from llmserve.cluster.fit import place
from llmserve.config import ModelConfig, ParallelismConfig, load_config
from llmserve.config.parallel import default_worker_resources
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit


# -- compute_placement ----------------------------------------------------------


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (1, 2), (2, 2), (8, 2), (4, 3)])
@pytest.mark.parametrize("device", ["gpu", "cpu"])
def test_one_bundle_per_worker(tp: int, pp: int, device: str) -> None:
    placement = compute_placement(tp, pp, device)
    assert len(placement.bundles) == tp * pp
    assert all(bundle == default_worker_resources(device) for bundle in placement.bundles)


def test_gpu_bundles_hold_one_gpu_each() -> None:
    assert compute_placement(2, 1, "gpu").bundles == [{"GPU": 1.0}, {"GPU": 1.0}]


def test_cpu_bundles_hold_one_cpu_each() -> None:
    assert compute_placement(1, 2, "cpu").bundles == [{"CPU": 1.0}, {"CPU": 1.0}]


# What a config may say, read from the config model itself.
CONFIG_STRATEGIES = typing.get_args(ParallelismConfig.model_fields["placement_strategy"].annotation)


def test_the_config_offers_exactly_rays_strategies() -> None:
    from ray.util.placement_group import VALID_PLACEMENT_GROUP_STRATEGIES

    assert set(CONFIG_STRATEGIES) == set(VALID_PLACEMENT_GROUP_STRATEGIES)


@pytest.mark.parametrize("strategy", CONFIG_STRATEGIES)
def test_every_config_strategy_is_placed_and_fit_checked(strategy: str) -> None:
    """The builder, Serve and the cluster-fit check all take every strategy a config may set."""
    from ray import serve

    class Dummy:
        pass

    placement = compute_placement(2, 2, "gpu", strategy, replica_resources={"CPU": 1.0})
    assert placement.strategy == strategy
    assert len(placement.bundles) == 4
    deployment = serve.deployment(Dummy).options(
        ray_actor_options={"num_cpus": 1.0}, **placement.serve_options()
    )
    assert deployment._replica_config.placement_group_strategy == strategy
    nodes = [{"CPU": 4.0, "GPU": 4.0} for _ in range(4)]
    assert len(place(placement.bundles, strategy, nodes)) == 4


@pytest.mark.parametrize("strategy", ["pack", "STRICT", "SPREAD_ALL"])
def test_the_fit_check_refuses_what_the_config_refuses(strategy: str) -> None:
    with pytest.raises(ValueError, match="placement strategy"):
        place([{"GPU": 1.0}], strategy, [{"GPU": 1.0}])
    with pytest.raises(ValueError):
        ParallelismConfig(placement_strategy=strategy)


def test_default_strategy_is_pack() -> None:
    assert compute_placement(2, 1, "gpu").strategy == "PACK"


@pytest.mark.parametrize("strategy", ["pack", "STRICT", "", "SPREAD_ALL", None])
def test_unknown_strategy_raises(strategy) -> None:
    with pytest.raises(ValueError, match="placement strategy"):
        compute_placement(2, 1, "gpu", strategy)


@pytest.mark.parametrize(("tp", "pp"), [(0, 1), (1, 0), (-1, 1), (2, -2), (0, 0)])
def test_invalid_parallel_sizes_raise(tp: int, pp: int) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        compute_placement(tp, pp, "gpu")


def test_custom_resources_per_worker_replace_the_default() -> None:
    worker = {"GPU": 1.0, "CPU": 2.0, "accelerator_type:H100": 0.001}
    placement = compute_placement(2, 2, "gpu", resources_per_worker=worker)
    assert placement.bundles == [worker] * 4
    assert all("GPU" in b and b["CPU"] == 2.0 for b in placement.bundles)


def test_custom_resources_are_copied_per_bundle() -> None:
    worker = {"GPU": 1.0}
    placement = compute_placement(1, 3, "gpu", resources_per_worker=worker)
    placement.bundles[1]["GPU"] = 7.0
    assert worker == {"GPU": 1.0}
    assert placement.bundles[0] == placement.bundles[2] == {"GPU": 1.0}


def test_fractional_gpu_per_worker() -> None:
    placement = compute_placement(2, 1, "gpu", resources_per_worker={"GPU": 0.5})
    assert placement.bundles == [{"GPU": 0.5}, {"GPU": 0.5}]


def test_replica_resources_go_to_bundle_zero_only() -> None:
    placement = compute_placement(4, 1, "gpu", replica_resources={"CPU": 1.0, "memory": 1e9})
    assert placement.bundles[0] == {"GPU": 1.0, "CPU": 1.0, "memory": 1e9}
    assert placement.bundles[1:] == [{"GPU": 1.0}] * 3


def test_replica_resources_add_to_a_resource_the_worker_has() -> None:
    placement = compute_placement(2, 1, "cpu", replica_resources={"CPU": 0.5})
    assert placement.bundles == [{"CPU": 1.5}, {"CPU": 1.0}]


def test_zero_replica_resources_leave_bundles_alone() -> None:
    placement = compute_placement(2, 1, "gpu", replica_resources={"CPU": 0})
    assert placement.bundles == [{"GPU": 1.0}, {"GPU": 1.0}]


def test_replica_resources_with_a_single_worker() -> None:
    placement = compute_placement(1, 1, "gpu", replica_resources={"CPU": 2.0})
    assert placement.bundles == [{"GPU": 1.0, "CPU": 2.0}]


def test_serve_accepts_the_placement_options() -> None:
    """The option names and values are ones ``serve.deployment(...).options`` validates."""
    from ray import serve

    class Dummy:
        pass

    placement = compute_placement(2, 2, "gpu", "SPREAD", replica_resources={"CPU": 1.0})
    deployment = serve.deployment(Dummy).options(
        ray_actor_options={"num_cpus": 1.0}, **placement.serve_options()
    )
    assert deployment._replica_config.placement_group_bundles == placement.bundles
    assert deployment._replica_config.placement_group_strategy == "SPREAD"


# -- engine_deployment_options --------------------------------------------------


def _model(path: str) -> ModelConfig:
    return load_config(CONFIGS / path).models[0]


def test_gpu_tp2_config_reserves_two_gpus_on_one_node() -> None:
    model = _model("gpu-tp2.yaml")
    options = engine_deployment_options(model)
    assert options["placement_group_bundles"] == [{"GPU": 1.0}, {"GPU": 1.0}]
    assert options["placement_group_strategy"] == model.parallelism.placement_strategy
    assert options["placement_group_strategy"] == "STRICT_PACK"
    # The config autoscales, so Serve gets no fixed num_replicas.
    assert "num_replicas" not in options
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["max_ongoing_requests"] == 128
    assert options["health_check_timeout_s"] == 60
    assert options["ray_actor_options"] == {"num_cpus": 0}


def test_gpu_tp8_pp2_config_reserves_sixteen_gpus() -> None:
    model = _model("gpu-tp8-pp2.yaml")
    options = engine_deployment_options(model)
    assert len(options["placement_group_bundles"]) == 16
    assert options["placement_group_bundles"] == [{"GPU": 1.0}] * 16
    assert options["placement_group_strategy"] == "PACK"
    assert options["num_replicas"] == 1
    assert options["graceful_shutdown_timeout_s"] == 120
    assert options["ray_actor_options"] == {
        "num_cpus": 0,
        "runtime_env": {"env_vars": {"NCCL_DEBUG": "WARN"}},
    }


@pytest.mark.parametrize("path", ["tiny.yaml", "default.yaml"])
def test_single_cpu_worker_gets_no_placement_group(path: str) -> None:
    options = engine_deployment_options(_model(path))
    assert "placement_group_bundles" not in options
    assert "placement_group_strategy" not in options
    assert options["num_replicas"] == 1


@pytest.mark.parametrize("path", ["tiny.yaml", "default.yaml"])
def test_env_vars_become_the_replicas_runtime_env(path: str) -> None:
    options = engine_deployment_options(_model(path))
    assert options["ray_actor_options"]["runtime_env"] == {
        "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}
    }


def test_no_env_vars_no_runtime_env() -> None:
    options = engine_deployment_options(ModelConfig(id="m", source="/models/m", device="cpu"))
    assert "runtime_env" not in options["ray_actor_options"]


def test_every_shipped_config_gives_valid_serve_options() -> None:
    from ray import serve

    class Dummy:
        pass

    for path in sorted(CONFIGS.glob("*.yaml")):
        for model in load_config(path).models:
            deployment = serve.deployment(Dummy).options(**engine_deployment_options(model))
            assert deployment.name == "Dummy", path


def _cfg(**kwargs) -> ModelConfig:
    return ModelConfig(id="m", source="/models/m", **kwargs)


def test_cpu_tensor_parallel_gets_cpu_bundles() -> None:
    model = _cfg(device="cpu", parallelism={"tensor_parallel_size": 2})
    options = engine_deployment_options(model)
    assert options["placement_group_bundles"] == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert options["placement_group_strategy"] == "PACK"


def test_single_gpu_worker_still_gets_a_placement_group() -> None:
    options = engine_deployment_options(_cfg(device="gpu"))
    assert options["placement_group_bundles"] == [{"GPU": 1.0}]


def test_replica_cpus_are_added_to_bundle_zero() -> None:
    model = _cfg(
        device="gpu",
        parallelism={"tensor_parallel_size": 2, "placement_strategy": "SPREAD"},
        deployment={"num_cpus": 0.5},
    )
    options = engine_deployment_options(model)
    assert options["placement_group_bundles"] == [{"GPU": 1.0, "CPU": 0.5}, {"GPU": 1.0}]
    assert options["placement_group_strategy"] == "SPREAD"
    assert options["ray_actor_options"] == {"num_cpus": 0.5}


def test_config_resources_per_worker_are_used() -> None:
    model = _cfg(
        device="gpu",
        parallelism={
            "tensor_parallel_size": 2,
            "pipeline_parallel_size": 2,
            "placement_strategy": "STRICT_SPREAD",
            "resources_per_worker": {"GPU": 1, "CPU": 4},
        },
        deployment={"num_cpus": 1},
    )
    options = engine_deployment_options(model)
    assert options["placement_group_bundles"] == [
        {"GPU": 1.0, "CPU": 5.0},
        {"GPU": 1.0, "CPU": 4.0},
        {"GPU": 1.0, "CPU": 4.0},
        {"GPU": 1.0, "CPU": 4.0},
    ]
    assert options["placement_group_strategy"] == "STRICT_SPREAD"


def test_options_match_the_configs_own_bundles() -> None:
    """The app's bundles agree with ``ParallelismConfig.placement_bundles``."""
    for path in ("gpu-tp2.yaml", "gpu-tp8-pp2.yaml"):
        model = _model(path)
        options = engine_deployment_options(model)
        assert options["placement_group_bundles"] == model.parallelism.placement_bundles("gpu")


def test_the_planned_device_decides_the_bundles() -> None:
    """A given device wins; ``auto`` is planned from the cluster (tests/integration/placement)."""
    model = _cfg(device="auto")
    assert engine_deployment_options(model, device="gpu")["placement_group_bundles"] == [
        {"GPU": 1.0}
    ]
    assert "placement_group_bundles" not in engine_deployment_options(model, device="cpu")


def test_auto_device_needs_a_cluster_to_plan_for() -> None:
    import ray

    assert not ray.is_initialized()
    with pytest.raises(RuntimeError, match="device: auto is decided by the Ray cluster"):
        engine_deployment_options(_cfg(device="auto"))
