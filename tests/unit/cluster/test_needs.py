"""cluster.needs: what each engine asks Ray for, from the config's own definitions."""

from __future__ import annotations

import pytest

from llmserve.builder.options import engine_deployment_options
from llmserve.cluster.needs import engine_needs
from llmserve.config import load_config, validate_config_dict
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit

SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def _device(device: str) -> str:
    return "gpu" if device == "auto" else device


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_one_need_per_engine_with_its_replica_bounds_and_placement(path) -> None:
    config = load_config(path)
    needs = engine_needs(config, _device)
    assert [n.path for n in needs] == [e.path for e in config.engines()]
    for need, engine in zip(needs, config.engines(), strict=True):
        cfg = engine.config
        assert need.id == cfg.id
        bounds = cfg.deployment.replica_bounds()
        assert (need.min_replicas, need.max_replicas, need.initial_replicas) == bounds
        options = engine_deployment_options(cfg, device=_device(cfg.device))
        if need.placement_group:
            assert need.bundles == options["placement_group_bundles"]
            assert need.strategy == options["placement_group_strategy"]
        else:
            assert "placement_group_bundles" not in options


def test_autoscaling_bounds_reach_the_plan() -> None:
    scaling = {"min_replicas": 1, "max_replicas": 5, "initial_replicas": 2}
    config = validate_config_dict(
        {
            "models": [
                {"id": "a", "source": "org/a", "device": "gpu"},
                {"id": "b", "source": "org/b", "deployment": {"autoscaling_config": scaling}},
            ]
        }
    )
    [a, b] = engine_needs(config, _device)
    assert (a.min_replicas, a.max_replicas, a.initial_replicas) == (1, 1, 1)
    assert (b.min_replicas, b.max_replicas, b.initial_replicas) == (1, 5, 2)
