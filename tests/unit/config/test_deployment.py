from __future__ import annotations

import pytest

from llmserve.config import (
    AutoscalingConfig,
    ConfigError,
    DeploymentConfig,
    ParallelismConfig,
    validate_config_dict,
)
from llmserve.config.deployment import (
    IngressDeploymentConfig,
    PipelineDeploymentConfig,
    PoolingDeploymentConfig,
    RetrieverDeploymentConfig,
)

pytestmark = pytest.mark.unit


def _with_deployment(deployment: dict) -> dict:
    return {"models": [{"id": "m", "source": "builtin:tiny-llama", "deployment": deployment}]}


def test_serve_refuses_overflow_with_429_and_retry_after() -> None:
    serve = pytest.importorskip("ray.serve")

    class Replica:
        pass

    deployment = serve.deployment(**DeploymentConfig().to_serve_options(retry_after_s=3))(Replica)
    assert deployment.backpressure_config.status_code == 429
    assert deployment.backpressure_config.retry_after_s == 3


@pytest.mark.parametrize(
    "cls",
    [
        DeploymentConfig,
        PoolingDeploymentConfig,
        RetrieverDeploymentConfig,
        PipelineDeploymentConfig,
        IngressDeploymentConfig,
    ],
)
def test_every_default_queue_is_bounded(cls) -> None:
    options = cls().to_serve_options()
    assert options["max_ongoing_requests"] > 0
    assert options["max_queued_requests"] >= 0


def test_default_ingress_has_room_beyond_what_it_serves_in_process() -> None:
    # A fused model and one fused pipeline, both full, still leave ingress
    # slots for /health, /v1/models and the models behind handles.
    ingress = IngressDeploymentConfig()
    fused = DeploymentConfig()
    pipeline = PipelineDeploymentConfig()
    in_process = sum(c.max_ongoing_requests + c.max_queued_requests for c in (fused, pipeline))
    assert ingress.max_ongoing_requests > in_process


def test_fixed_replicas() -> None:
    options = DeploymentConfig(num_replicas=3, num_cpus=0.5).to_serve_options()
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 0.5}


def test_autoscaling_replaces_num_replicas() -> None:
    config = DeploymentConfig(
        autoscaling_config=AutoscalingConfig(min_replicas=0, max_replicas=4, initial_replicas=1),
        max_queued_requests=100,
    )
    options = config.to_serve_options()
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 0,
        "max_replicas": 4,
        "initial_replicas": 1,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 5,
        "downscale_delay_s": 30,
    }
    assert options["max_queued_requests"] == 100
    # initial_replicas is left out when unset, so Ray applies its own default.
    unset = DeploymentConfig(autoscaling_config=AutoscalingConfig(max_replicas=2))
    assert "initial_replicas" not in unset.to_serve_options()["autoscaling_config"]


@pytest.mark.parametrize(
    "config",
    [
        DeploymentConfig(),
        DeploymentConfig(num_replicas=2, num_cpus=1),
        DeploymentConfig(autoscaling_config=AutoscalingConfig(min_replicas=1, max_replicas=3)),
        DeploymentConfig(max_surge_percent=0),
    ],
)
def test_ray_serve_accepts_the_options(config: DeploymentConfig) -> None:
    serve = pytest.importorskip("ray.serve")

    class Replica:
        pass

    # Building a Deployment validates the options without starting Ray.
    deployment = serve.deployment(**config.to_serve_options())(Replica)
    assert deployment.max_ongoing_requests == config.max_ongoing_requests
    # Serve's rollout reads it from the deployment config (old replicas serve on until
    # their replacements are ready when it is positive).
    assert deployment._deployment_config.max_surge_percent == config.max_surge_percent


def test_num_replicas_and_autoscaling_are_exclusive(issues) -> None:
    found = issues(_with_deployment({"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}))
    assert found == {
        "models[0].deployment.num_replicas": (
            "set either num_replicas or autoscaling_config, not both"
        )
    }


def test_autoscaling_min_above_max(issues) -> None:
    found = issues(_with_deployment({"autoscaling_config": {"min_replicas": 5, "max_replicas": 2}}))
    assert found == {
        "models[0].deployment.autoscaling_config.min_replicas": (
            "min_replicas (5) is greater than max_replicas (2)"
        )
    }


def test_autoscaling_initial_outside_range(issues) -> None:
    found = issues(
        _with_deployment({"autoscaling_config": {"max_replicas": 2, "initial_replicas": 3}})
    )
    assert found == {
        "models[0].deployment.autoscaling_config.initial_replicas": (
            "initial_replicas (3) must be between min_replicas (1) and max_replicas (2)"
        )
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_replicas", 0),
        ("max_ongoing_requests", 0),
        ("max_queued_requests", -1),
        ("health_check_period_s", 0),
        ("num_cpus", -1),
        ("max_surge_percent", 101),
    ],
)
def test_deployment_bounds(issues, field: str, value: float) -> None:
    assert list(issues(_with_deployment({field: value}))) == [f"models[0].deployment.{field}"]


def test_a_request_queue_may_be_empty() -> None:
    app = validate_config_dict(_with_deployment({"max_queued_requests": 0}))
    assert app.models[0].deployment.max_queued_requests == 0


def test_parallelism_defaults_per_device() -> None:
    parallel = ParallelismConfig(tensor_parallel_size=2, pipeline_parallel_size=3)
    assert parallel.world_size == 6
    assert parallel.worker_resources("gpu") == {"GPU": 1.0}
    assert parallel.worker_resources("cpu") == {"CPU": 1.0}
    custom = ParallelismConfig(resources_per_worker={"GPU": 0.5, "CPU": 2})
    assert custom.placement_bundles("gpu") == [{"GPU": 0.5, "CPU": 2.0}]


def test_parallelism_is_validated(issues) -> None:
    data = {
        "models": [
            {
                "id": "m",
                "source": "x",
                "parallelism": {
                    "tensor_parallel_size": 0,
                    "placement_strategy": "pack",
                    "resources_per_worker": {"GPU": -1},
                },
            }
        ]
    }
    assert sorted(issues(data)) == [
        "models[0].parallelism.placement_strategy",
        "models[0].parallelism.resources_per_worker.GPU",
        "models[0].parallelism.tensor_parallel_size",
    ]


def test_config_error_is_not_a_validation_error() -> None:
    # Callers catch one exception type whatever went wrong.
    with pytest.raises(ConfigError):
        validate_config_dict(_with_deployment({"num_replicas": "many"}))


def _resources(resources: dict) -> dict:
    model = {"id": "m", "source": "x", "device": "gpu"}
    model["parallelism"] = {"resources_per_worker": resources}
    return {"models": [model]}


@pytest.mark.parametrize(
    "name",
    [
        "x$(id>&2)",  # reaches `ray start --resources` through KubeRay's shell
        "a b",
        "a'b",
        "bundle",  # Ray's own placement-group resource
        "gpu_group_0_abc",  # Ray names placement-group resources NAME_group_...
        "-gpu",
        "x" * 129,
    ],
)
def test_resource_names_ray_would_misread_are_refused(issues, name: str) -> None:
    found = issues(_resources({"GPU": 1, name: 1}))
    path = f"models[0].parallelism.resources_per_worker.{name}"
    assert list(found) == [path]
    assert "resource name" in found[path]


def test_ray_resource_names_are_accepted() -> None:
    names = {"GPU": 1, "CPU": 2, "memory": 1e9, "accelerator_type:H100": 0.001}
    names |= {"TPU-v4-8-head": 1, "node:10.0.0.5": 0.01, "my_res.v2": 1}
    config = validate_config_dict(_resources(names))
    assert config.models[0].parallelism.resources_per_worker == names
