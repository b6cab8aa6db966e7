"""The NetworkPolicy of ``llmserve build --kuberay``: who may reach which port of the Ray pods.

The policy is checked twice: its shape against Kubernetes' own schema of a
NetworkPolicy rule, and its meaning by evaluating it the way Kubernetes does
for a few kinds of caller.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import CONFIGS, ROOT
from tests.unit.cluster.test_kuberay import _errors, _strict, build_documents, crd_schema

pytestmark = pytest.mark.unit

NAMESPACE = "serving"  # where `kubectl apply -n serving` puts both documents
NAME_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace
OPERATOR = {"app.kubernetes.io/component": "kuberay-operator"}
# What the ray pods listen on: GCS, dashboard, Ray Client, Ray's metrics,
# the dashboard agent, a raylet's object manager, and Serve.
RAY_PORTS = [6379, 8265, 10001, 8080, 52365, 8076]
SERVE_PORT = 8000


def _policy_schema() -> dict[str, Any]:
    """A NetworkPolicy's schema, from the parts of Kubernetes' OpenAPI schema the
    KubeRay CRD embeds (its ``networkPolicy`` field holds Kubernetes'
    NetworkPolicyIngressRule and LabelSelector types, generated from k8s.io/api)."""
    cluster = crd_schema()["properties"]["spec"]["properties"]
    head = cluster["rayClusterConfig"]["properties"]["networkPolicy"]["properties"]["head"]
    rule = copy.deepcopy(head["properties"]["ingressRules"]["items"])
    peer = rule["properties"]["from"]["items"]["properties"]
    port = rule["properties"]["ports"]["items"]["properties"]
    port["protocol"]["enum"] = ["TCP", "UDP", "SCTP"]
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "networking.k8s.io/v1"},
            "kind": {"const": "NetworkPolicy"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": {
                "type": "object",
                "required": ["podSelector"],
                "properties": {
                    "podSelector": peer["podSelector"],
                    "policyTypes": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["Ingress", "Egress"]},
                    },
                    "ingress": {"type": "array", "items": rule},
                },
            },
        },
    }


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    return jsonschema.Draft7Validator(_strict(_policy_schema()))


Documents = tuple[dict[str, Any], dict[str, Any]]


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Callable[..., Documents]:
    """``documents(*options)``: the RayService and NetworkPolicy for configs/gpu-tp2.yaml,
    built once per set of options (a fresh copy each call)."""
    built: dict[tuple[str, ...], Documents] = {}

    def get(*extra: str) -> Documents:
        if extra not in built:
            tmp = tmp_path_factory.mktemp("kuberay")
            policy, rayservice = build_documents(CONFIGS / "gpu-tp2.yaml", tmp, *extra)
            assert (policy["kind"], rayservice["kind"]) == ("NetworkPolicy", "RayService")
            built[extra] = (rayservice, policy)
        return copy.deepcopy(built[extra])

    return get


def test_the_policy_is_a_valid_network_policy(validator, documents) -> None:
    _, policy = documents()
    assert _errors(validator, policy) == []


def test_the_schema_catches_mistakes(validator, documents) -> None:
    _, policy = documents()
    policy["spec"]["ingress"][0]["form"] = policy["spec"]["ingress"][0].pop("from")
    policy["spec"]["ingress"][-1]["ports"][0]["protocol"] = "tcp"
    errors = _errors(validator, policy)
    assert any("'form' was unexpected" in e for e in errors)
    assert any("'tcp' is not one of" in e for e in errors)


@dataclass(frozen=True)
class Caller:
    """A pod that opens a connection: its labels and its namespace's labels."""

    labels: dict[str, str]
    namespace: str = NAMESPACE
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def namespace_matches(self, selector: dict[str, Any]) -> bool:
        return _matches(selector, self.namespace_labels | {NAME_LABEL: self.namespace})


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the evaluator knows matchLabels only"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_admits(peer: dict[str, Any], caller: Caller) -> bool:
    assert set(peer) <= {"podSelector", "namespaceSelector"}, "no ipBlock expected"
    if "namespaceSelector" in peer:
        if not caller.namespace_matches(peer["namespaceSelector"]):
            return False
    elif caller.namespace != NAMESPACE:  # a podSelector alone means the policy's namespace
        return False
    return _matches(peer.get("podSelector", {}), caller.labels)


def _port_admits(entry: dict[str, Any], port: int) -> bool:
    assert isinstance(entry["port"], int), "named ports are not expected"
    return entry.get("protocol", "TCP") == "TCP" and entry["port"] <= port <= entry.get(
        "endPort", entry["port"]
    )


def admitted(policy: dict[str, Any], target: dict[str, str], caller: Caller, port: int) -> bool:
    """Whether Kubernetes lets ``caller`` connect to ``port`` of a pod labelled ``target``."""
    spec = policy["spec"]
    if not _matches(spec["podSelector"], target) or "Ingress" not in spec["policyTypes"]:
        return True  # the policy does not restrict this pod
    for rule in spec.get("ingress", []):
        sources = rule.get("from")
        ports = rule.get("ports")
        if (not sources or any(_peer_admits(p, caller) for p in sources)) and (
            not ports or any(_port_admits(p, port) for p in ports)
        ):
            return True
    return False


def _ray_pods(rayservice: dict[str, Any]) -> list[dict[str, str]]:
    """The labels each pod template gives its pods (KubeRay adds its own to them)."""
    cluster = rayservice["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"]["metadata"]["labels"] for group in groups]


def test_every_ray_pod_is_under_the_policy(documents) -> None:
    rayservice, policy = documents()
    nobody = Caller(labels={"app": "other"})
    for pod in _ray_pods(rayservice):
        assert not admitted(policy, pod, nobody, 6379)
    # And nothing else in the namespace is.
    assert admitted(policy, {"app": "other"}, nobody, 6379)


def test_other_pods_reach_the_serving_port_and_nothing_else(documents) -> None:
    rayservice, policy = documents()
    callers = [
        Caller(labels={"app": "client"}),  # same namespace
        Caller(labels={"app": "client"}, namespace="apps"),
        Caller(labels=OPERATOR, namespace="apps"),  # looks like the operator, elsewhere
    ]
    for pod in _ray_pods(rayservice):
        for caller in callers:
            assert admitted(policy, pod, caller, SERVE_PORT), caller
            for port in RAY_PORTS:
                assert not admitted(policy, pod, caller, port), (caller, port)


def test_ray_pods_reach_each_other_on_every_port(documents) -> None:
    rayservice, policy = documents()
    pods = _ray_pods(rayservice)
    for pod in pods:
        for peer in pods:
            for port in [*RAY_PORTS, SERVE_PORT, 20123]:  # 20123: a worker process's port
                assert admitted(policy, pod, Caller(labels=peer), port)


def test_the_operator_reaches_the_dashboard_only(documents) -> None:
    rayservice, policy = documents("--operator-namespace", "ray-system")
    operator = Caller(
        labels=OPERATOR | {"app.kubernetes.io/name": "kuberay"}, namespace="ray-system"
    )
    [head, *_] = _ray_pods(rayservice)
    assert admitted(policy, head, operator, 8265)
    for port in [6379, 10001, 8080]:
        assert not admitted(policy, head, operator, port)
    # The default is KubeRay's default install namespace.
    _, policy = documents()
    assert admitted(policy, head, Caller(labels=OPERATOR, namespace="default"), 8265)
    assert not admitted(policy, head, operator, 8265)


def test_the_policy_is_named_after_and_selects_its_own_rayservice(documents) -> None:
    first, first_policy = documents("--name", "chat")
    second, second_policy = documents("--name", "embed")
    assert first_policy["metadata"]["name"] != second_policy["metadata"]["name"]
    # Two RayServices in one namespace do not open their ports to each other.
    for pod in _ray_pods(first):
        assert not admitted(first_policy, pod, Caller(labels=_ray_pods(second)[0]), 8265)


def _documented_policies() -> list[dict[str, Any]]:
    """The NetworkPolicies in docs/kubernetes.md's YAML blocks."""
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    docs = [d for block in blocks for d in yaml.safe_load_all(block)]
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "NetworkPolicy"]


def test_the_documented_policies_are_valid_and_do_what_the_docs_say(validator, documents) -> None:
    metrics, written = _documented_policies()
    rayservice, policy = documents()
    assert written == policy  # the example is what the build writes
    assert _errors(validator, metrics) == []
    prometheus = Caller(labels={"app": "prometheus"}, namespace="monitoring")
    [head, *_] = _ray_pods(rayservice)
    assert admitted(metrics, head, prometheus, 8080)
    assert not admitted(policy, head, prometheus, 8080)
