"""The cluster-fit computation on plain node lists (no Ray)."""

from __future__ import annotations

import pytest

from llmserve.cluster.fit import Node, place
from llmserve.cluster.nodes import fit_report
from llmserve.config import load_config, validate_config_dict
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit


def _nodes(*gpus: float, cpus: float = 8) -> list[Node]:
    return [Node(f"n{i}", {"CPU": cpus, "GPU": float(g)}) for i, g in enumerate(gpus)]


def _gpu_model(tp: int, pp: int = 1, strategy: str = "PACK", **deployment) -> dict:
    return {
        "models": [
            {
                "id": "m",
                "source": "org/m",
                "device": "gpu",
                "parallelism": {
                    "tensor_parallel_size": tp,
                    "pipeline_parallel_size": pp,
                    "placement_strategy": strategy,
                },
                "deployment": deployment,
            }
        ]
    }


def test_strict_pack_names_the_missing_gpus_on_one_node() -> None:
    report = fit_report(
        validate_config_dict(_gpu_model(8, strategy="STRICT_PACK")), _nodes(0, 4, 4)
    )
    assert not report.ok
    assert report.problems == [
        "models[0] needs 8 GPUs on one node for STRICT_PACK; largest node has 4"
    ]


def test_pack_spans_nodes_where_strict_pack_cannot() -> None:
    config = load_config(CONFIGS / "gpu-tp8-pp2.yaml")
    report = fit_report(config, _nodes(0, 8, 8))
    assert report.ok, report.problems
    [engine] = report.engines
    assert engine.nodes_used == 2
    assert "16 x {GPU: 1}, PACK, on 2 nodes" in report.lines()[0]

    short = fit_report(config, _nodes(0, 8, 4))
    assert short.problems == ["models[0] needs 16 GPUs across nodes for PACK; the cluster has 12"]


def test_pack_fills_one_stage_per_node() -> None:
    free = [{"GPU": 8.0}, {"GPU": 8.0}]
    chosen = place([{"GPU": 1.0}] * 16, "PACK", free)
    assert chosen == [0] * 8 + [1] * 8
    assert free == [{"GPU": 0.0}, {"GPU": 0.0}]


def test_spread_uses_every_node_and_strict_spread_needs_one_per_bundle() -> None:
    assert sorted(place([{"GPU": 1.0}] * 2, "SPREAD", [{"GPU": 4.0}, {"GPU": 4.0}])) == [0, 1]
    config = validate_config_dict(_gpu_model(4, strategy="STRICT_SPREAD"))
    report = fit_report(config, _nodes(0, 8, 8))
    assert report.problems == [
        "models[0] needs 4 nodes for STRICT_SPREAD (one bundle each, 4 x {GPU: 1}); "
        "only 2 can take one"
    ]


def test_a_failed_placement_takes_nothing() -> None:
    free = [{"GPU": 4.0}]
    assert isinstance(place([{"GPU": 1.0}] * 8, "PACK", free), str)
    assert free == [{"GPU": 4.0}]


def test_each_replica_fits_but_not_all_starting_replicas_together() -> None:
    data = _gpu_model(2, strategy="STRICT_PACK", num_replicas=3)
    report = fit_report(validate_config_dict(data), _nodes(0, 2, 2))
    assert report.engines[0].problem is None
    assert report.together is not None
    assert report.together.startswith("models[0] replica 3 of 3 does not fit next to the others")
    assert report.problems == [report.together]
    assert report.together.endswith(
        "(3 starting replicas in all): needs 2 GPUs on one node for STRICT_PACK; largest node has 0"
    )
    assert report.lines()[-1] == report.together
    assert fit_report(validate_config_dict(data), _nodes(2, 2, 2)).ok


def test_a_bundle_larger_than_every_node() -> None:
    data = _gpu_model(1)
    data["models"][0]["deployment"] = {"num_cpus": 16}  # goes into bundle 0
    report = fit_report(validate_config_dict(data), _nodes(0, 8, cpus=8))
    assert report.problems == ["models[0] needs 16 CPUs in one worker's bundle; largest node has 8"]


def test_auto_device_follows_the_cluster() -> None:
    data = _gpu_model(2)
    data["models"][0]["device"] = "auto"
    config = validate_config_dict(data)
    on_gpus = fit_report(config, _nodes(0, 4))
    assert on_gpus.engines[0].need.device == "gpu"
    assert on_gpus.engines[0].need.bundles == [{"GPU": 1.0}, {"GPU": 1.0}]
    on_cpus = fit_report(config, _nodes(0, 0))
    assert on_cpus.engines[0].need.device == "cpu"
    assert on_cpus.engines[0].need.bundles == [{"CPU": 1.0}, {"CPU": 1.0}]


def test_engines_that_reserve_nothing_always_fit() -> None:
    report = fit_report(load_config(CONFIGS / "default.yaml"), [Node("laptop", {"CPU": 2.0})])
    assert report.ok
    assert [e.need.path for e in report.engines] == ["models[0]", "embedders[0]", "rerankers[0]"]
    assert all(line.endswith("fits (reserves no resources)") for line in report.lines())
