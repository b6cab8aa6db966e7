"""Figures, targets, the Markdown table and the plot for ``bench_routing.py``.

``results`` maps each router ("power_of_two", "prefix_aware") to what
``bench_routing.measure_router`` returned: vLLM's benchmark results
(``bench``), and the per-replica deltas of the engines' own counters and of
llmserve's routing decisions over the measured window (``replicas``,
``decisions``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

COUNTERS = {
    "hits": "vllm:prefix_cache_hits_total",
    "queries": "vllm:prefix_cache_queries_total",
    "requests": "vllm:request_success_total",
}
DECISIONS = "llmserve_routing_decisions_total"

# --------------------------------------------------------------------------- counters


def replica_counters(exposition: str, model: str, deployment: str) -> dict[str, Any]:
    """From one ``/metrics`` answer: each engine counter summed per replica for
    ``model``, and the routing decisions for ``deployment`` summed per reason."""
    replicas: dict[str, dict[str, float]] = {}
    decisions: dict[str, float] = {}
    names = {sample: key for key, sample in COUNTERS.items()}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if sample.name in names and labels.get("model_name") == model:
                replica = labels.get("replica", "")
                counts = replicas.setdefault(replica, dict.fromkeys(COUNTERS, 0.0))
                counts[names[sample.name]] += sample.value
            elif sample.name == DECISIONS and labels.get("deployment") == deployment:
                decisions[labels["reason"]] = decisions.get(labels["reason"], 0.0) + sample.value
    return {"replicas": replicas, "decisions": decisions}


def delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the counters gained between two ``replica_counters`` (a replica or reason
    absent before counts from zero)."""
    replicas = {}
    for replica, counts in after["replicas"].items():
        start = before["replicas"].get(replica, {})
        replicas[replica] = {k: v - start.get(k, 0.0) for k, v in counts.items()}
    decisions = {
        reason: n - before["decisions"].get(reason, 0.0) for reason, n in after["decisions"].items()
    }
    return {"replicas": replicas, "decisions": {k: v for k, v in decisions.items() if v}}


# --------------------------------------------------------------------------- figures


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """The compared figures of one router's run."""
    bench, replicas = result["bench"], result["replicas"]
    hits = sum(r["hits"] for r in replicas.values())
    queries = sum(r["queries"] for r in replicas.values())
    per_replica = sorted((r["requests"] for r in replicas.values()), reverse=True)
    total = sum(per_replica)
    return {
        "hit_rate": hits / queries if queries else None,
        "ttft_p50_ms": bench["median_ttft_ms"],
        "ttft_p99_ms": bench["p99_ttft_ms"],
        "request_throughput": bench["request_throughput"],
        "output_throughput": bench["output_throughput"],
        "requests_per_replica": per_replica,
        "busiest_share": per_replica[0] / total if total else None,
        "failed": bench["failed"],
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """docs/performance.md, "Routing": prefix_aware against power_of_two in one run."""
    if not {"prefix_aware", "power_of_two"} <= results.keys():
        return []
    pa, p2 = figures(results["prefix_aware"]), figures(results["power_of_two"])
    rows = [
        ("prefix-cache hit rate", pa["hit_rate"], 0.8, True),
        ("hit rate vs power_of_two", _ratio(pa["hit_rate"], p2["hit_rate"]), 1.5, True),
        ("TTFT p50 vs power_of_two", _ratio(pa["ttft_p50_ms"], p2["ttft_p50_ms"]), 0.6, False),
        (
            "request throughput vs power_of_two",
            _ratio(pa["request_throughput"], p2["request_throughput"]),
            1.0,
            True,
        ),
        ("busiest replica's share of requests", pa["busiest_share"], 0.65, False),
    ]
    out = []
    for what, value, limit, at_least in rows:
        met = None if value is None else (value >= limit if at_least else value <= limit)
        status = "n/a" if met is None else "met" if met else "missed"
        out.append({"target": what, "value": value, "limit": limit, "at_least": at_least,
                    "status": status})  # fmt: skip
    return out


# --------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| router | hit rate | TTFT p50 ms | TTFT p99 ms | req/s | out tok/s "
        "| requests per replica | busiest share | failed |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for router, result in results.items():
        f = figures(result)
        lines.append(
            f"| {router} | {fmt(f['hit_rate'])} | {fmt(f['ttft_p50_ms'], 0)} "
            f"| {fmt(f['ttft_p99_ms'], 0)} | {fmt(f['request_throughput'], 3)} "
            f"| {fmt(f['output_throughput'], 1)} "
            f"| {' / '.join(str(int(n)) for n in f['requests_per_replica'])} "
            f"| {fmt(f['busiest_share'])} | {f['failed']} |"
        )
    return lines


def decisions_table(results: dict[str, Any]) -> list[str]:
    reasons = sorted({r for res in results.values() for r in res["decisions"]})
    if not reasons:
        return []
    lines = ["| router | " + " | ".join(reasons) + " |", "|---|" + "---:|" * len(reasons)]
    for router, result in results.items():
        counts = [str(int(result["decisions"].get(r, 0))) for r in reasons]
        lines.append(f"| {router} | " + " | ".join(counts) + " |")
    return lines


def targets_table(rows: Iterable[dict[str, Any]]) -> list[str]:
    lines = ["| target | value | limit | status |", "|---|---:|---:|---|"]
    for row in rows:
        bound = "≥" if row["at_least"] else "≤"
        lines.append(
            f"| {row['target']} | {fmt(row['value'])} | {bound} {row['limit']} | {row['status']} |"
        )
    return lines


def render_markdown(results: dict[str, Any], heading: list[str]) -> str:
    lines = [*heading, "", *table(results)]
    if decisions := decisions_table(results):
        lines += ["", "Routing decisions (llmserve_routing_decisions_total):", "", *decisions]
    if rows := evaluate_targets(results):
        lines += ["", *targets_table(rows)]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """PNG: hit rate, TTFT p50/p99, throughput and requests per replica, per router."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    routers = list(results)
    figs = {r: figures(results[r]) for r in routers}
    fig = Figure(figsize=(14, 3.6))
    FigureCanvasAgg(fig)
    hit, ttft, rate, share = fig.subplots(1, 4)
    hit.bar(routers, [figs[r]["hit_rate"] or 0 for r in routers])
    hit.set_ylim(0, 1)
    hit.set_title("prefix-cache hit rate")
    xs = range(len(routers))
    ttft.bar([x - 0.2 for x in xs], [figs[r]["ttft_p50_ms"] for r in routers], 0.4, label="p50")
    ttft.bar([x + 0.2 for x in xs], [figs[r]["ttft_p99_ms"] for r in routers], 0.4, label="p99")
    ttft.set_xticks(list(xs), routers)
    ttft.set_title("TTFT (ms)")
    ttft.legend()
    rate.bar(routers, [figs[r]["request_throughput"] for r in routers])
    rate.set_title("requests/s")
    most = max((len(figs[r]["requests_per_replica"]) for r in routers), default=0)
    for i in range(most):
        share.bar(
            [x + (i - (most - 1) / 2) * 0.3 for x in xs],
            [(figs[r]["requests_per_replica"] + [0] * most)[i] for r in routers],
            0.3,
            label=f"replica {i + 1}",
        )
    share.set_xticks(list(xs), routers)
    share.set_title("requests per replica (busiest first)")
    share.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
