"""Comparison, targets, Markdown tables and the plot for ``bench_serving.py``.

``results`` maps each run ("bare", "llmserve", "bare-2") to what
``bench_serving.measure_system`` returned: cold start, idle background and, per
concurrency level, vLLM's benchmark results with a ``cpu`` entry
(``bench_cpu.level_report``). Every ratio is against the mean of the bare runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_cpu import GROUPS

# --------------------------------------------------------------------------- comparing


def is_bare(run: str) -> bool:
    """A bare vLLM run: "bare" or "bare-2" (not the "bare mean" row)."""
    return run == "bare" or run.startswith("bare-")


def level_metrics(level: dict[str, Any]) -> dict[str, float | None]:
    """The figures compared between systems, from one level's results."""
    cpu = level.get("cpu", {}).get("ms_per_token", {})
    return {
        "throughput": level["output_throughput"],
        "ttft_p50": level["median_ttft_ms"],
        "ttft_p99": level["p99_ttft_ms"],
        "tpot_p50": level["median_tpot_ms"],
        "itl_p50": level["median_itl_ms"],
        **{f"cpu_{group}": cpu.get(group) for group in (*GROUPS, "total")},
    }


def _mean_dicts(dicts: list[dict[str, float | None]]) -> dict[str, float | None] | None:
    """Key-wise mean (None where any value is None); None for no dicts."""
    if not dicts:
        return None
    means = {}
    for key in dicts[0]:
        values = [d.get(key) for d in dicts]
        means[key] = None if None in values else sum(values) / len(values)
    return means


def bare_mean(results: dict[str, Any], c: int) -> dict[str, float | None] | None:
    """Mean metrics of the bare runs at concurrency ``c``; None without a bare run."""
    runs = [r["levels"][c] for name, r in results.items() if is_bare(name) and c in r["levels"]]
    return _mean_dicts([level_metrics(level) for level in runs])


def bare_idle_mean(results: dict[str, Any]) -> dict[str, float | None] | None:
    """Mean idle background of the bare runs, % of a core per group."""
    return _mean_dicts([r["idle"]["percent_of_core"] for n, r in results.items() if is_bare(n)])


def _ratio(value: float | None, base: float | None, floor: float = 0.0) -> float | None:
    """value / base, or None without both or when the base is at most ``floor``."""
    return None if value is None or base is None or base <= floor else value / base


def _itl_ratio(itl: float, base: float | None) -> float | None:
    """ITL p50 relative to bare, or None when either median is below 0.1 ms.

    Such a median means most SSE events reached the client in bursts, several
    per read: it measures the client's reads, not the server's token pace.
    """
    return None if itl < 0.1 else _ratio(itl, base, floor=0.1)


def compare(metrics: dict[str, float | None], base: dict[str, float | None] | None) -> dict:
    """Ratios and deltas of one run's metrics against the bare mean."""
    base = base or {}
    ttft_base = base.get("ttft_p50")
    return {
        "throughput_ratio": _ratio(metrics["throughput"], base.get("throughput")),
        "ttft_delta_ms": None if ttft_base is None else metrics["ttft_p50"] - ttft_base,
        "itl_ratio": _itl_ratio(metrics["itl_p50"], base.get("itl_p50")),
        "cpu_ratio": _ratio(metrics["cpu_total"], base.get("cpu_total")),
    }


def comparisons(results: dict[str, Any]) -> dict[str, dict[int, dict]]:
    """``compare`` at every level of every run that is not bare."""
    return {
        name: {
            c: compare(level_metrics(lv), bare_mean(results, c)) for c, lv in r["levels"].items()
        }
        for name, r in results.items()
        if not is_bare(name)
    }


def runs_at(results: dict[str, Any], c: int) -> list[tuple[str, dict[str, float | None]]]:
    """(label, metrics) at concurrency ``c``: bare runs, their mean (when two), the others."""
    bare = [(n, level_metrics(r["levels"][c])) for n, r in results.items() if is_bare(n)]
    rows = list(bare)
    if len(bare) > 1:
        rows.append(("bare mean", bare_mean(results, c)))
    rows += [(n, level_metrics(r["levels"][c])) for n, r in results.items() if not is_bare(n)]
    return rows


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A bound on one of ``compare``'s figures for a system in front of vLLM."""

    what: str
    metric: str
    limit: float
    unit: str
    at_most: bool = True
    levels: tuple[int, ...] | None = None  # None: every level run


# docs/performance.md, "Targets".
TARGETS = (
    Target("CPU per output token vs bare", "cpu_ratio", 1.10, "×", levels=(8, 32)),
    Target("output throughput vs bare", "throughput_ratio", 0.95, "×", False, (1, 8, 32)),
    Target("TTFT p50 minus bare", "ttft_delta_ms", 10.0, " ms", levels=(1, 8)),
    Target("ITL p50 vs bare", "itl_ratio", 1.05, "×"),
)
IDLE_TARGET = Target("idle background", "idle_percent", 5.0, " % of a core")


def _status(target: Target, value: float | None) -> str:
    if value is None:
        return "n/a"
    met = value <= target.limit if target.at_most else value >= target.limit
    return "met" if met else "missed"


def _target_row(system: str, target: Target, c: int | None, value: float | None) -> dict:
    bound = "≤" if target.at_most else "≥"
    return {
        "system": system,
        "target": target.what,
        "c": c,
        "value": value,
        "unit": target.unit,
        "limit": f"{bound} {fmt(target.limit, 2 if target.unit == '×' else 0, target.unit)}",
        "status": _status(target, value),
    }


def evaluate_targets(results: dict[str, Any], concurrency: list[int]) -> list[dict]:
    """Every target for every system in front of vLLM: value, limit and met/missed.

    A target at a level that was not run has status "not run"; one whose
    figure is missing (no bare run, ITL in bursts) "n/a".
    """
    rows = []
    for system, result in results.items():
        if is_bare(system):
            continue
        for target in TARGETS:
            for c in target.levels or concurrency:
                if c not in result["levels"]:
                    rows.append({**_target_row(system, target, c, None), "status": "not run"})
                    continue
                figures = compare(level_metrics(result["levels"][c]), bare_mean(results, c))
                rows.append(_target_row(system, target, c, figures[target.metric]))
        idle = result["idle"]["percent_of_core"]["total"]
        rows.append(_target_row(system, IDLE_TARGET, None, idle))
    return rows


# --------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    """``value`` with ``digits`` decimals and ``suffix``, or "n/a" for None."""
    return "n/a" if value is None else f"{value:.{digits}f}{suffix}"


def level_table(results: dict[str, Any], c: int) -> list[str]:
    """Markdown table of one concurrency level, each run relative to the bare mean."""
    base = bare_mean(results, c)
    lines = [
        f"### concurrency {c}",
        "",
        "| run | output tok/s | vs bare | TTFT p50 ms | TTFT p99 ms | TTFT Δ vs bare ms "
        "| TPOT p50 ms | ITL p50 ms | ITL vs bare | CPU ms/token | CPU vs bare | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in runs_at(results, c):
        ratios = compare(m, base)
        failed = results[name]["levels"][c]["failed"] if name in results else "–"
        lines.append(
            f"| {name} | {m['throughput']:.1f} | {fmt(ratios['throughput_ratio'], 2, '×')} "
            f"| {m['ttft_p50']:.1f} | {m['ttft_p99']:.1f} | {fmt(ratios['ttft_delta_ms'])} "
            f"| {m['tpot_p50']:.2f} | {m['itl_p50']:.2f} | {fmt(ratios['itl_ratio'], 2, '×')} "
            f"| {fmt(m['cpu_total'], 2)} | {fmt(ratios['cpu_ratio'], 2, '×')} | {failed} |"
        )
    return lines


def cpu_group_table(results: dict[str, Any], c: int) -> list[str]:
    """Markdown table: CPU ms per output token of each process group, per run."""
    runs = runs_at(results, c)
    base = bare_mean(results, c)
    others = [name for name in results if not is_bare(name)]
    header = [name for name, _ in runs] + [f"{name} / bare" for name in others if base]
    lines = [
        f"CPU ms per output token by process group, c={c} (idle background subtracted):",
        "",
        "| group | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(header),
    ]
    for group in (*GROUPS, "total"):
        key = f"cpu_{group}"
        cells = [fmt(m[key], 3) for _, m in runs]
        cells += [fmt(_ratio(dict(runs)[n][key], base[key]), 2, "×") for n in others if base]
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    for name, result in results.items():
        vanished = result["levels"][c].get("cpu", {}).get("vanished_processes")
        if vanished:
            lines.append(
                f"\n{name}: {len(vanished)} process(es) ended during the level, counted up "
                f"to their last sample: {', '.join(vanished)}"
            )
    return lines


def idle_table(results: dict[str, Any]) -> list[str]:
    """Markdown table: the idle background per process group, % of one core."""
    runs = [(name, r["idle"]["percent_of_core"]) for name, r in results.items() if is_bare(name)]
    if len(runs) > 1:
        runs.append(("bare mean", bare_idle_mean(results)))
    runs += [(n, r["idle"]["percent_of_core"]) for n, r in results.items() if not is_bare(n)]
    seconds = ", ".join(f"{n} {r['idle']['wall_s']:.0f} s" for n, r in results.items())
    lines = [
        f"### idle background, % of one core ({seconds} without requests)",
        "",
        "| group | " + " | ".join(name for name, _ in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for group in (*GROUPS, "total"):
        lines.append(f"| {group} | " + " | ".join(fmt(p[group]) for _, p in runs) + " |")
    return lines


def targets_table(rows: list[dict]) -> list[str]:
    """Markdown table of ``evaluate_targets`` rows."""
    lines = [
        "### targets (llmserve against the bare mean)",
        "",
        "| system | target | c | measured | target | status |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in rows:
        c = "–" if row["c"] is None else row["c"]
        lines.append(
            f"| {row['system']} | {row['target']} | {c} | {fmt(row['value'], 2, row['unit'])} "
            f"| {row['limit']} | {row['status']} |"
        )
    return lines


def summary_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "### startup and single stream",
        "",
        "| run | cold start s | single-stream tok/s (c=1) | idle % of a core |",
        "|---|---:|---:|---:|",
    ]
    for name, system in results.items():
        single = system["levels"].get(1)
        tput = single["output_throughput"] if single else None
        idle = system["idle"]["percent_of_core"]["total"]
        lines.append(f"| {name} | {system['cold_start_s']:.1f} | {fmt(tput)} | {idle:.1f} |")
    return lines


def render_markdown(results: dict[str, Any], concurrency: list[int], heading: list[str]) -> str:
    """The whole report: summary, per-level tables, idle background, targets."""
    lines = [*heading, "", *summary_table(results)]
    for c in concurrency:
        lines += ["", *level_table(results, c), "", *cpu_group_table(results, c)]
    lines += ["", *idle_table(results)]
    if any(is_bare(n) for n in results) and any(not is_bare(n) for n in results):
        lines += ["", *targets_table(evaluate_targets(results, concurrency))]
    return "\n".join(lines)


def plot_levels(results: dict[str, Any], path: Path) -> None:
    """PNG: output throughput, TTFT p50 and CPU ms/token against concurrency.

    One line per system (the bare mean, llmserve); each bare run as markers.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    levels = sorted({c for r in results.values() for c in r["levels"]})
    panels = (
        ("throughput", "output tokens/s"),
        ("ttft_p50", "TTFT p50 (ms)"),
        ("cpu_total", "CPU ms per output token"),
    )
    series: dict[str, dict[int, dict]] = {}
    for c in levels:
        for name, metrics in runs_at(results, c):
            series.setdefault(name, {})[c] = metrics
    # With a bare mean, the bare runs it comes from are only markers.
    bare_runs = [name for name in series if is_bare(name)] if "bare mean" in series else []
    markers = dict(zip(bare_runs, "x+1234", strict=False))
    fig = Figure(figsize=(13, 4))
    FigureCanvasAgg(fig)
    for ax, (key, label) in zip(fig.subplots(1, 3), panels, strict=True):
        for name, by_c in series.items():
            points = [(c, m[key]) for c, m in sorted(by_c.items()) if m[key] is not None]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            if name in markers:
                ax.plot(xs, ys, markers[name], color="grey", label=name)
            else:
                ax.plot(xs, ys, "o-", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrency")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
