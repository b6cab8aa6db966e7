"""scripts/bench_routing.py: the app it measures, the counters it reads, its targets."""

from __future__ import annotations

import sys

import pytest

from llmserve.config import validate_config_dict
from tests.helpers import load_script

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_routing")


@pytest.fixture(scope="module")
def report(bench):
    return sys.modules["bench_routing_report"]


EXPOSITION = """\
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="r-prefix_aware",replica="a"} 900.0
vllm:prefix_cache_hits_total{engine="0",model_name="r-prefix_aware",replica="b"} 700.0
vllm:prefix_cache_hits_total{engine="0",model_name="other",replica="c"} 5.0
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="r-prefix_aware",replica="a"} 1000.0
vllm:prefix_cache_queries_total{engine="0",model_name="r-prefix_aware",replica="b"} 1000.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",model_name="r-prefix_aware",reason="length",replica="a"} 6.0
vllm:request_success_total{engine="0",model_name="r-prefix_aware",reason="stop",replica="a"} 1.0
vllm:request_success_total{engine="0",model_name="r-prefix_aware",replica="b"} 5.0
# TYPE llmserve_routing_decisions counter
llmserve_routing_decisions_total{deployment="llm-r-prefix_aware",reason="prefix",replica="i"} 9.0
llmserve_routing_decisions_total{deployment="llm-r-prefix_aware",reason="new",replica="i"} 3.0
llmserve_routing_decisions_total{deployment="llm-other",reason="new",replica="i"} 4.0
"""


def test_the_app_has_one_two_replica_deployment_per_router(bench) -> None:
    opts = bench.parse_args(["--kv-blocks", "20"])
    config = validate_config_dict(bench.app_config(opts))
    assert [m.id for m in config.models] == ["r-power_of_two", "r-prefix_aware"]
    for model, router in zip(config.models, bench.ROUTERS, strict=True):
        assert model.deployment.num_replicas == 2
        assert model.deployment.router() == router
        assert model.engine_kwargs["num_gpu_blocks_override"] == 20
    assert config.ingress.fused_model is None


def test_counters_are_read_per_replica_for_one_model(report) -> None:
    counters = report.replica_counters(EXPOSITION, "r-prefix_aware", "llm-r-prefix_aware")
    assert counters["replicas"] == {
        "a": {"hits": 900.0, "queries": 1000.0, "requests": 7.0},
        "b": {"hits": 700.0, "queries": 1000.0, "requests": 5.0},
    }
    assert counters["decisions"] == {"prefix": 9.0, "new": 3.0}


def test_figures_come_from_the_deltas_over_the_run(report) -> None:
    before = {
        "replicas": {"a": {"hits": 100.0, "queries": 200.0, "requests": 1.0}},
        "decisions": {"new": 1.0},
    }
    after = report.replica_counters(EXPOSITION, "r-prefix_aware", "llm-r-prefix_aware")
    moved = report.delta(before, after)
    bench = {
        "median_ttft_ms": 100.0,
        "p99_ttft_ms": 400.0,
        "request_throughput": 1.0,
        "output_throughput": 16.0,
        "failed": 0,
    }
    figures = report.figures({"bench": bench, **moved})
    assert figures["hit_rate"] == pytest.approx((800 + 700) / (800 + 1000))
    assert figures["requests_per_replica"] == [6.0, 5.0]
    assert figures["busiest_share"] == pytest.approx(6 / 11)
    assert moved["decisions"] == {"prefix": 9.0, "new": 2.0}


def _result(hit, ttft, rate, per_replica):
    hits = hit * 1000
    return {
        "bench": {
            "median_ttft_ms": ttft,
            "p99_ttft_ms": ttft * 3,
            "request_throughput": rate,
            "output_throughput": rate * 16,
            "failed": 0,
        },
        "replicas": {
            f"r{i}": {
                "hits": hits / len(per_replica),
                "queries": 1000 / len(per_replica),
                "requests": n,
            }  # fmt: skip
            for i, n in enumerate(per_replica)
        },
        "decisions": {},
    }


def test_targets_are_met_or_missed_on_the_measured_figures(report) -> None:
    good = {
        "power_of_two": _result(0.4, 1000.0, 1.0, [24, 24]),
        "prefix_aware": _result(0.85, 300.0, 1.0, [25, 23]),
    }
    assert {row["status"] for row in report.evaluate_targets(good)} == {"met"}
    hot_spot = {**good, "prefix_aware": _result(0.85, 300.0, 0.9, [40, 8])}
    missed = {r["target"] for r in report.evaluate_targets(hot_spot) if r["status"] == "missed"}
    assert missed == {"request throughput vs power_of_two", "busiest replica's share of requests"}
    markdown = report.render_markdown(good, ["# t"])
    assert "| prefix_aware | 0.85 |" in markdown and "missed" not in markdown
