"""The NetworkPolicy that ``llmserve build --kuberay`` writes beside the RayService.

Ray's control plane (GCS, dashboard, Ray Client, the raylets and workers) runs
whatever code it is sent: a pod that reaches the dashboard can submit a job and
read every Secret the Ray pods hold. Token auth guards it; this policy keeps
everyone else from reaching it at all:

- the Ray pods of this RayService reach each other on every port (Ray picks
  its worker ports at random, and HAProxy forwards to ingress replicas on
  other pods);
- the KubeRay operator, from its own namespace, reaches the dashboard, through
  which it deploys the Serve app and follows its status;
- anyone reaches the serving port, which API keys guard.

KubeRay's own ``networkPolicy`` field (alpha since 1.7) would do the same, but
it needs a feature gate on the operator, and an operator without the gate
refuses the RayService. Egress is left open: the pods download models.
``kubectl port-forward`` is not subject to NetworkPolicies, so the dashboard
stays reachable on purpose that way.
"""

from __future__ import annotations

from typing import Any

POD_LABEL = "llmserve/rayservice"
"""The label on every Ray pod of a RayService (its name), which the policy selects."""
OPERATOR_POD_LABELS = {"app.kubernetes.io/component": "kuberay-operator"}
"""KubeRay's operator pods carry this label whether installed by Helm or Kustomize."""
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Kubernetes sets it on every namespace, and nobody can change it."""
DEFAULT_OPERATOR_NAMESPACE = "default"
"""Where KubeRay's Helm chart and Kustomize install the operator unless told otherwise."""


def ray_pod_labels(name: str) -> dict[str, str]:
    return {POD_LABEL: name}


def policy_name(name: str) -> str:
    return f"{name}-ray-network"


def network_policy(
    name: str, *, serve_port: int, dashboard_port: int, operator_namespace: str
) -> dict[str, Any]:
    """Ingress rules for the Ray pods of RayService ``name``, as plain data."""

    def ray_pods() -> dict[str, Any]:  # a fresh copy each time: no YAML aliases
        return {"matchLabels": ray_pod_labels(name)}

    operator = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}},
        "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy_name(name), "labels": ray_pod_labels(name)},
        "spec": {
            "podSelector": ray_pods(),
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": ray_pods()}]},
                {"from": [operator], "ports": [{"protocol": "TCP", "port": dashboard_port}]},
                {"ports": [{"protocol": "TCP", "port": serve_port}]},
            ],
        },
    }
