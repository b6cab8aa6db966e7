"""``DeploymentConfig.replica_bounds``: the one reading of a deployment's replica settings.

Serve reads the same numbers from ``to_serve_options``, and every user of the
bounds (stream resumption, the responses-store check on raw data, the
cluster plan in ``tests/unit/cluster/test_needs.py``) agrees with it.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmserve.config import ConfigError, DeploymentConfig, ModelConfig, validate_config_dict

pytestmark = pytest.mark.unit

BLOCKS: list[dict[str, Any]] = [
    {},
    {"num_replicas": 1},
    {"num_replicas": 3},
    {"autoscaling_config": {}},
    {"autoscaling_config": {"min_replicas": 0, "max_replicas": 4}},
    {"autoscaling_config": {"min_replicas": 1, "max_replicas": 3, "initial_replicas": 2}},
    {"autoscaling_config": {"min_replicas": 2, "max_replicas": 2}},
]


@pytest.mark.parametrize("block", BLOCKS)
def test_serve_reads_the_same_bounds_from_the_options(block: dict[str, Any]) -> None:
    """Serve starts an autoscaling deployment at initial_replicas, else at min_replicas."""
    from ray import serve

    class Dummy:
        pass

    deployment = DeploymentConfig.model_validate(block)
    served = serve.deployment(Dummy).options(**deployment.to_serve_options())
    config = served._deployment_config
    scaling = config.autoscaling_config
    if scaling is None:
        serve_bounds = (config.num_replicas,) * 3
    else:
        start = (
            scaling.min_replicas if scaling.initial_replicas is None else scaling.initial_replicas
        )
        serve_bounds = (scaling.min_replicas, scaling.max_replicas, start)
    assert tuple(deployment.replica_bounds()) == serve_bounds


@pytest.mark.parametrize("block", BLOCKS)
def test_streams_resume_where_a_model_can_have_another_replica(block: dict[str, Any]) -> None:
    model = ModelConfig(id="m", source="org/m", deployment=block)
    most = model.deployment.replica_bounds().max
    assert model.resumes_streams(fused=False) == (most > 1)
    assert model.resumes_streams(fused=True) is False


def _store_issue(data: dict[str, Any]) -> bool:
    try:
        validate_config_dict(data)
    except ConfigError as exc:
        return any(issue.path.endswith("VLLM_ENABLE_RESPONSES_API_STORE") for issue in exc.issues)
    return False


@pytest.mark.parametrize("block", BLOCKS)
def test_the_responses_store_check_on_raw_data_agrees(block: dict[str, Any]) -> None:
    """The check runs on raw mappings (to report alongside field errors) but reads the
    block through replica_bounds: it fires exactly when the model may have other replicas."""
    most = DeploymentConfig.model_validate(block).replica_bounds().max
    model = {"id": "m", "source": "org/m", "env_vars": {"VLLM_ENABLE_RESPONSES_API_STORE": "1"}}
    assert _store_issue({"models": [{**model, "deployment": block}]}) == (most != 1)
    # Also next to an unrelated field error, when pydantic stops before "after" validators.
    broken = {"models": [{**model, "deployment": block, "engine_kwargs": {"nonsense_arg": 1}}]}
    assert _store_issue(broken) == (most != 1)
    # A fused model has the ingress's replicas.
    fused = {"ingress": {"fused_model": "m", "deployment": block}, "models": [model]}
    assert _store_issue(fused) == (most != 1)
