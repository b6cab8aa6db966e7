"""A KubeRay ``RayService`` manifest for a config. Plain data: no Ray, no Kubernetes client.

- ``serveConfigV2`` is the Serve config ``llmserve build`` writes, with two
  changes a pod needs: the llmserve config travels inline (the file on this
  machine does not exist in the pod, and KubeRay redeploys when
  ``serveConfigV2`` changes), and Serve listens on 0.0.0.0 so that the
  Kubernetes Service reaches it.
- The head runs no GPU work (``num-gpus: 0``).
- Worker groups come from the engines' placement groups: the GPUs of a pod
  follow TP x PP and the strategy (``STRICT_PACK``: a whole replica per pod;
  ``PACK``: one pipeline stage of TP workers per pod; ``SPREAD`` and
  ``STRICT_SPREAD``: one worker per pod), one group per pod shape, with
  min/max/initial pods from the models' replica bounds.
- Every pod gets the Serve flags for direct ingress and the API keys from a
  Kubernetes Secret; a literal key in the config is refused.
- Locked down: Ray's token auth is on (``authOptions``, the token from the
  same Secret), the Services stay inside the Kubernetes cluster, the head
  declares only the ports something must reach, every ``rayStartParams`` value
  (KubeRay pastes them into a shell command) is shell-quoted, and a
  NetworkPolicy (``network_policy.py``) lets only the serving port be reached
  from outside the RayService's own pods.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from llmserve.cluster.k8s_names import label_value
from llmserve.cluster.needs import NO_PLACEMENT_GROUP, EngineNeed, engine_needs
from llmserve.cluster.network_policy import (
    DEFAULT_OPERATOR_NAMESPACE,
    network_policy,
    ray_pod_labels,
)
from llmserve.cluster.pod_env import (
    DEFAULT_SECRET,
    pod_env,
    ray_auth,
    secret_env,
)
from llmserve.config import AppConfig, AppEngine
from llmserve.engine.device import summed

API_VERSION = "ray.io/v1"
IMAGE_CONFIG_DIR = "/app/configs"
"""Where relative paths in the inline config resolve in the pod: the images' config folder."""
DEFAULT_IMAGES = {"gpu": "llmserve:gpu", "cpu": "llmserve:cpu"}
DASHBOARD_PORT = 8265
HEAD_PORTS = {"gcs-server": 6379, "dashboard": DASHBOARD_PORT}
"""The head's ports beside ``serve``, by KubeRay's names: the operator finds the
dashboard through the head Service by that name, and workers reach the GCS through
that Service when it has a cluster IP. Ray Client (10001) is left out: nothing uses it."""
GPU_RESOURCE = "nvidia.com/gpu"
BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
"""What ``ray start`` sets from its own flags; anything else in a bundle is a custom resource."""


@dataclass(frozen=True)
class PodShape:
    """What one worker pod must offer Ray: whole GPUs plus whole custom resources."""

    gpus: int
    custom: tuple[tuple[str, int], ...] = ()

    @property
    def base_name(self) -> str:
        """What its group is called, before names are made valid and unique."""
        base = f"gpu{self.gpus}" if self.gpus else "cpu"
        return base + "".join(f"-{name}" for name, _ in self.custom)


@dataclass
class WorkerGroup:
    shape: PodShape
    name: str = ""
    """Its ``groupName``: unique, and a valid label value (KubeRay labels pods with it)."""
    cpus: int = 0
    replicas: int = 0
    min_replicas: int = 0
    max_replicas: int = 0
    engines: list[str] = field(default_factory=list)


def pods_per_replica(need: EngineNeed) -> list[dict[str, float]]:
    """The resources of each pod one replica of ``need`` occupies."""
    bundles = need.bundles
    if not bundles:
        return []  # reserves nothing: Ray may run it on any pod, the head included
    if need.strategy in ("STRICT_PACK", NO_PLACEMENT_GROUP):
        return [summed(bundles)]
    if need.strategy == "PACK":
        tp = need.tensor_parallel_size
        return [summed(bundles[i : i + tp]) for i in range(0, len(bundles), tp)]
    return [dict(b) for b in bundles]  # SPREAD, STRICT_SPREAD


def _shape(pod: dict[str, float]) -> PodShape:
    # Whole units, like GPUs: Ray's KubeRay autoscaler reads integers only.
    custom = {k: math.ceil(v) for k, v in pod.items() if k not in BUILTIN_RESOURCES}
    return PodShape(gpus=math.ceil(pod.get("GPU", 0.0)), custom=tuple(sorted(custom.items())))


def worker_groups(needs: Sequence[EngineNeed]) -> list[WorkerGroup]:
    """One worker group per pod shape, sized from the engines' replica bounds."""
    groups: dict[PodShape, WorkerGroup] = {}
    for need in needs:
        for pod in pods_per_replica(need):
            shape = _shape(pod)
            group = groups.setdefault(shape, WorkerGroup(shape))
            group.cpus = max(group.cpus, math.ceil(pod.get("CPU", 0.0)))
            group.replicas += need.initial_replicas
            group.min_replicas += need.min_replicas
            group.max_replicas += need.max_replicas
            if need.path not in group.engines:
                group.engines.append(need.path)
    ordered = sorted(groups.values(), key=lambda g: (-g.shape.gpus, g.shape.base_name))
    taken: set[str] = set()
    for group in ordered:
        group.name = label_value(group.shape.base_name, taken)
        taken.add(group.name)
    return ordered


def worker_start_params(shape: PodShape) -> dict[str, str]:
    """A worker pod's ``rayStartParams``, each value shell-quoted.

    KubeRay runs ``ray start --KEY=VALUE ...`` through bash. ``resources`` is
    JSON in single quotes, the form KubeRay writes itself and that Ray's
    autoscaler reads back (it drops the outer quotes).
    """
    params = {"num-gpus": str(shape.gpus)}
    if shape.custom:
        params["resources"] = json.dumps(dict(shape.custom))
    return {key: shlex.quote(value) for key, value in params.items()}


def pod_serve_config(
    serve_config: dict[str, Any],
    raw_config: dict[str, Any],
    planned: Sequence[AppEngine],
    device: str,
) -> dict[str, Any]:
    """``llmserve build``'s Serve config, changed for pods: config inline, Serve on 0.0.0.0.

    The ``planned`` engines (their ``device: auto`` was planned here) get
    ``device`` in the inline config, so that the pods build what the manifest sized.
    """
    out = copy.deepcopy(serve_config)
    out["http_options"]["host"] = "0.0.0.0"
    data = copy.deepcopy(raw_config)
    for engine in planned:
        data[engine.section][engine.index]["device"] = device
    [app] = out["applications"]
    app["args"] = {"config": data, "base_dir": IMAGE_CONFIG_DIR}
    return out


def rayservice(
    config: AppConfig,
    raw_config: dict[str, Any],
    serve_config: dict[str, Any],
    *,
    name: str = "llmserve",
    image: str | None = None,
    secret: str = DEFAULT_SECRET,
    auto_device: str = "gpu",
) -> dict[str, Any]:
    """The RayService manifest as plain data (``dump_manifest`` it)."""
    needs = engine_needs(config, lambda d: auto_device if d == "auto" else d)
    planned = [e for e in config.engines() if e.config.device == "auto"]
    groups = worker_groups(needs)
    image = image or DEFAULT_IMAGES["gpu" if any(n.device == "gpu" for n in needs) else "cpu"]
    auth_options, auth_env = ray_auth(secret)
    env = pod_env(config) + auth_env + secret_env(config, secret)
    serve_port = config.ingress.port
    head_ports = [{"containerPort": p, "name": n} for n, p in HEAD_PORTS.items()]
    head_ports.append({"containerPort": serve_port, "name": "serve"})
    labels = ray_pod_labels(name)
    head_container = _container("ray-head", image, env, head_ports)
    cluster: dict[str, Any] = {
        "rayVersion": importlib.metadata.version("ray"),
        "enableInTreeAutoscaling": any(g.min_replicas != g.max_replicas for g in groups),
        "authOptions": auth_options,
        "headGroupSpec": {
            # Reachable through KubeRay's Services from inside the Kubernetes cluster only.
            "serviceType": "ClusterIP",
            # The operator reaches the dashboard over the pod network (KubeRay
            # sets 0.0.0.0 anyway); token auth and the NetworkPolicy guard it.
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-gpus": "0"},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": [head_container]},
            },
        },
        "workerGroupSpecs": [_worker_group(g, image, env, serve_port, labels) for g in groups],
    }
    pod_config = pod_serve_config(serve_config, raw_config, planned, auto_device)
    serve_yaml = yaml.safe_dump(pod_config, sort_keys=False)
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {"serveConfigV2": serve_yaml, "rayClusterConfig": cluster},
    }


def _container(
    name: str,
    image: str,
    env: list[dict[str, Any]],
    ports: list[dict[str, Any]],
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # A copy per container: a shared list would be dumped as a YAML anchor and alias.
    container: dict[str, Any] = {"name": name, "image": image, "env": copy.deepcopy(env)}
    container["ports"] = ports
    if resources:
        container["resources"] = resources
    return container


def _worker_group(
    group: WorkerGroup,
    image: str,
    env: list[dict[str, Any]],
    serve_port: int,
    labels: dict[str, str],
) -> dict[str, Any]:
    shape = group.shape
    resources: dict[str, Any] = {}
    if shape.gpus:
        resources["limits"] = {GPU_RESOURCE: shape.gpus}
    if group.cpus:
        resources["requests"] = {"cpu": str(group.cpus)}
    ports = [{"containerPort": serve_port, "name": "serve"}]
    return {
        "groupName": group.name,
        "replicas": group.replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": worker_start_params(shape),
        "template": {
            "metadata": {
                "labels": dict(labels),
                "annotations": {"llmserve/engines": ", ".join(group.engines)},
            },
            "spec": {"containers": [_container("ray-worker", image, env, ports, resources)]},
        },
    }


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (``serveConfigV2``) as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def kuberay_manifests(
    config: AppConfig,
    raw_config: dict[str, Any],
    serve_config: dict[str, Any],
    *,
    name: str = "llmserve",
    image: str | None = None,
    secret: str = DEFAULT_SECRET,
    auto_device: str = "gpu",
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE,
) -> list[dict[str, Any]]:
    """The NetworkPolicy that locks the Ray pods down, and the RayService.

    The policy comes first: ``kubectl apply`` creates them in order, so the
    policy exists before the operator creates any pod.
    """
    service = rayservice(
        config,
        raw_config,
        serve_config,
        name=name,
        image=image,
        secret=secret,
        auto_device=auto_device,
    )
    policy = network_policy(
        name,
        serve_port=config.ingress.port,
        dashboard_port=DASHBOARD_PORT,
        operator_namespace=operator_namespace,
    )
    return [policy, service]


def dump_manifest(manifests: Sequence[dict[str, Any]]) -> str:
    """The documents as one YAML stream, for one ``kubectl apply -f``."""
    return yaml.dump_all(manifests, Dumper=_BlockDumper, sort_keys=False)
