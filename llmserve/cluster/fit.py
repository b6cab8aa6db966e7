"""Does a config's placement fit a cluster's nodes? Plain logic, no Ray.

Each engine replica asks Ray for a placement group: bundles plus a strategy.
``STRICT_PACK`` needs one node holding every bundle, ``STRICT_SPREAD`` one
node per bundle, ``PACK`` and ``SPREAD`` may use any nodes. This module
places bundles on the nodes' total resources the way those rules allow
(greedily, like Ray's own scheduler for identical bundles) and says what is
missing when they do not fit, e.g. "models[0] needs 8 GPUs on one node for
STRICT_PACK; largest node has 4".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmserve.cluster.needs import NO_PLACEMENT_GROUP, EngineNeed
from llmserve.engine.device import summed
from llmserve.literals import PLACEMENT_STRATEGIES

EPS = 1e-9
Resources = Mapping[str, float]


@dataclass(frozen=True)
class Node:
    name: str
    resources: dict[str, float]


@dataclass(frozen=True)
class EngineFit:
    need: EngineNeed
    problem: str | None
    """What is missing, starting with the engine's YAML path; None when one replica fits."""
    nodes_used: int = 0


@dataclass
class FitReport:
    nodes: list[Node]
    engines: list[EngineFit]
    together: str | None = None
    """Why the starting replicas of all engines do not fit at once; None when they do."""
    problems: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.problems = [e.problem for e in self.engines if e.problem]
        if self.together and not self.problems:
            self.problems.append(self.together)

    @property
    def ok(self) -> bool:
        return not self.problems

    def cluster_summary(self) -> str:
        gpus = ", ".join(amount(g) for g in sorted(n.resources.get("GPU", 0) for n in self.nodes))
        return f"{len(self.nodes)} nodes; GPUs per node: {gpus}"

    def lines(self) -> list[str]:
        """One line per engine (what is missing, or how it fits), then the joint check."""
        out = []
        for e in self.engines:
            need = e.need
            label = f"{need.path} ({need.id}, {need.device})"
            if e.problem:
                out.append(e.problem)
            elif not need.bundles:
                out.append(f"{label}: fits (reserves no resources)")
            else:
                strategy = "no placement group" if not need.placement_group else need.strategy
                out.append(
                    f"{label}: fits ({describe_bundles(need.bundles)}, {strategy}, "
                    f"on {e.nodes_used} node{'s' if e.nodes_used != 1 else ''})"
                )
        if self.together and self.problems == [self.together]:
            out.append(self.together)
        return out


def amount(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def quantity(value: float, resource: str) -> str:
    plural = "s" if resource in ("CPU", "GPU") and value != 1 else ""
    return f"{amount(value)} {resource}{plural}"


def describe(resources: Resources) -> str:
    inner = ", ".join(f"{k}: {amount(v)}" for k, v in sorted(resources.items()))
    return "{" + inner + "}"


def describe_bundles(bundles: Sequence[Resources]) -> str:
    shapes = {describe(b) for b in bundles}
    if len(shapes) == 1:
        return f"{len(bundles)} x {shapes.pop()}"
    return f"{len(bundles)} bundles, {describe(summed(bundles))} in all"


def _fits(bundle: Resources, free: Resources) -> bool:
    return all(free.get(k, 0.0) + EPS >= v for k, v in bundle.items())


def _take(free: dict[str, float], bundle: Resources) -> None:
    for k, v in bundle.items():
        free[k] = free.get(k, 0.0) - v


def _resource_order(resources: Resources) -> list[str]:
    """GPU first: it is what people size clusters by."""
    return sorted(resources, key=lambda r: (r != "GPU", r != "CPU", r))


def place(
    bundles: Sequence[Resources], strategy: str, free: list[dict[str, float]]
) -> list[int] | str:
    """Node index per bundle, taking the resources from ``free``; or why they do not fit.

    ``free`` is changed only when everything fits. The reason has no subject:
    callers prefix it with the engine's path.
    """
    if strategy not in (*PLACEMENT_STRATEGIES, NO_PLACEMENT_GROUP):
        raise ValueError(f"unknown placement strategy {strategy!r}")
    if not bundles:
        return []
    trial = [dict(f) for f in free]
    if strategy in ("STRICT_PACK", NO_PLACEMENT_GROUP):
        total = summed(bundles)
        fitting = [i for i, f in enumerate(trial) if _fits(total, f)]
        if not fitting:
            return _one_node_reason(total, trial, strategy)
        # Best fit: the node with the least GPU left over keeps big nodes for big groups.
        best = min(fitting, key=lambda i: (trial[i].get("GPU", 0) - total.get("GPU", 0), i))
        _take(trial[best], total)
        chosen = [best] * len(bundles)
    else:
        chosen = []
        for bundle in bundles:
            index = _pick_node(bundle, strategy, trial, chosen)
            if index is None:
                return _many_nodes_reason(bundles, strategy, free, len(chosen))
            _take(trial[index], bundle)
            chosen.append(index)
    free[:] = trial
    return chosen


def _pick_node(
    bundle: Resources, strategy: str, free: list[dict[str, float]], used: list[int]
) -> int | None:
    candidates = [i for i, f in enumerate(free) if _fits(bundle, f)]
    if strategy == "STRICT_SPREAD":
        candidates = [i for i in candidates if i not in used]
    if not candidates:
        return None
    main = _resource_order(bundle)[0] if bundle else "CPU"
    if strategy == "PACK":
        # Stay on nodes this group already uses, then open the roomiest one.
        return min(candidates, key=lambda i: (i not in used, -free[i].get(main, 0), i))
    # SPREAD and STRICT_SPREAD: a fresh node first, the roomiest one.
    return min(candidates, key=lambda i: (used.count(i), -free[i].get(main, 0), i))


def _one_node_reason(total: Resources, free: list[dict[str, float]], strategy: str) -> str:
    where = "for its replica" if strategy == NO_PLACEMENT_GROUP else f"for {strategy}"
    for resource in _resource_order(total):
        largest = max((f.get(resource, 0.0) for f in free), default=0.0)
        if largest + EPS < total[resource]:
            return (
                f"needs {quantity(total[resource], resource)} on one node {where}; "
                f"largest node has {amount(largest)}"
            )
    return f"needs {describe(total)} on one node {where}; no node has all of it"


def _many_nodes_reason(
    bundles: Sequence[Resources], strategy: str, free: list[dict[str, float]], placed: int
) -> str:
    for bundle in bundles:
        if not any(_fits(bundle, f) for f in free):
            reason = _one_node_reason(bundle, free, strategy)
            return reason.replace(f"on one node for {strategy}", "in one worker's bundle", 1)
    total = summed(bundles)
    cluster = summed(free)
    for resource in _resource_order(total):
        if cluster.get(resource, 0.0) + EPS < total[resource]:
            return (
                f"needs {quantity(total[resource], resource)} across nodes for {strategy}; "
                f"the cluster has {amount(cluster.get(resource, 0.0))}"
            )
    if strategy == "STRICT_SPREAD":
        return (
            f"needs {len(bundles)} nodes for STRICT_SPREAD (one bundle each, "
            f"{describe_bundles(bundles)}); only {placed} can take one"
        )
    return (
        f"needs {describe_bundles(bundles)} for {strategy}; "
        f"only {placed} fit on the nodes' resources"
    )


def check_fit(needs: Sequence[EngineNeed], nodes: Sequence[Node]) -> FitReport:
    """Per engine: does one replica fit the nodes? Then: do all starting replicas fit at once?"""
    totals = [dict(n.resources) for n in nodes]
    engines = []
    for need in needs:
        free = [dict(t) for t in totals]
        result = place(need.bundles, need.strategy, free)
        if isinstance(result, str):
            engines.append(EngineFit(need, f"{need.path} {result}"))
        else:
            engines.append(EngineFit(need, None, nodes_used=len(set(result))))
    return FitReport(list(nodes), engines, _together(needs, totals))


def _together(needs: Sequence[EngineNeed], totals: list[dict[str, float]]) -> str | None:
    free = [dict(t) for t in totals]
    for need in needs:
        for replica in range(need.initial_replicas):
            result = place(need.bundles, need.strategy, free)
            if isinstance(result, str):
                count = sum(n.initial_replicas for n in needs)
                return (
                    f"{need.path} replica {replica + 1} of {need.initial_replicas} does not fit "
                    f"next to the others ({count} starting replicas in all): {result}"
                )
    return None
