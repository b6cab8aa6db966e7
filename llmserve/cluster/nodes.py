"""The cluster-fit check against a running Ray cluster (needs a Ray connection)."""

from __future__ import annotations

from llmserve.cluster.fit import FitReport, Node, check_fit
from llmserve.cluster.needs import engine_needs
from llmserve.config import AppConfig
from llmserve.engine.device import device_from_resources, summed


def cluster_nodes() -> list[Node]:
    """The alive nodes of the connected cluster with their total resources."""
    import ray

    nodes = []
    for info in ray.nodes():
        if not info.get("Alive"):
            continue
        resources = {
            name: float(value)
            for name, value in info.get("Resources", {}).items()
            if not name.startswith("node:")
        }
        nodes.append(Node(name=info.get("NodeManagerAddress", info["NodeID"]), resources=resources))
    return nodes


def fit_report(config: AppConfig, nodes: list[Node] | None = None) -> FitReport:
    """Compare the config's placement needs with the nodes (default: the connected cluster's).

    ``device: auto`` is decided by the cluster's resources, as the app builder decides it.
    """
    nodes = cluster_nodes() if nodes is None else nodes
    cluster_device = device_from_resources(summed(n.resources for n in nodes))
    needs = engine_needs(config, lambda d: cluster_device if d == "auto" else d)
    return check_fit(needs, nodes)
