"""CLI pieces for getting onto a cluster: the cluster-fit check and ``build --kuberay``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from llmserve.config import AppConfig

EXIT_NO_FIT = 2


def add_kuberay_args(p: argparse.ArgumentParser) -> None:
    from llmserve.cluster.network_policy import DEFAULT_OPERATOR_NAMESPACE
    from llmserve.cluster.pod_env import DEFAULT_SECRET, RAY_TOKEN_KEY
    from llmserve.literals import DEVICES

    p.add_argument(
        "--kuberay", action="store_true", help="write a KubeRay RayService manifest instead"
    )
    p.add_argument("--image", help="--kuberay: container image (default llmserve:gpu or :cpu)")
    p.add_argument("--name", default="llmserve", help="--kuberay: RayService name")
    p.add_argument(
        "--secret",
        default=DEFAULT_SECRET,
        help=(
            f"--kuberay: Secret holding the API keys, HF_TOKEN and the Ray token "
            f"({RAY_TOKEN_KEY}) (default {DEFAULT_SECRET})"
        ),
    )
    p.add_argument(
        "--operator-namespace",
        default=DEFAULT_OPERATOR_NAMESPACE,
        help=(
            "--kuberay: namespace of the KubeRay operator, the one caller the NetworkPolicy "
            f"lets reach the Ray dashboard (default {DEFAULT_OPERATOR_NAMESPACE})"
        ),
    )
    p.add_argument(
        "--auto-device",
        choices=DEVICES,
        default="gpu",
        help="--kuberay: what device: auto becomes in the manifest (default gpu)",
    )


def write_kuberay(args: argparse.Namespace, config: AppConfig) -> int:
    from llmserve.builder.serve_config import serve_config
    from llmserve.cluster import k8s_names
    from llmserve.cluster.kuberay import dump_manifest, kuberay_manifests
    from llmserve.config.loader import read_config_data

    k8s_names.rayservice_name(args.name, "--name")
    k8s_names.object_name(args.secret, "--secret")
    k8s_names.namespace_name(args.operator_namespace, "--operator-namespace")
    manifests = kuberay_manifests(
        config,
        read_config_data(args.config),
        serve_config(args.config, config),
        name=args.name,
        image=args.image,
        secret=args.secret,
        auto_device=args.auto_device,
        operator_namespace=args.operator_namespace,
    )
    text = dump_manifest(manifests)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    # The summary goes to stderr when the manifest itself goes to stdout.
    info = sys.stdout if args.output else sys.stderr
    [policy, manifest] = manifests
    for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        gpus = g["rayStartParams"]["num-gpus"]
        print(
            f"worker group {g['groupName']}: {gpus} GPUs per pod, "
            f"{g['minReplicas']}-{g['maxReplicas']} pods (start {g['replicas']})",
            file=info,
        )
    _print_deploy_commands(args, config, policy, info)
    return 0


def _print_deploy_commands(
    args: argparse.Namespace, config: AppConfig, policy: dict, stream: TextIO
) -> None:
    """The kubectl commands that create the Secret and apply the manifests."""
    from llmserve.cluster.kuberay import DASHBOARD_PORT
    from llmserve.cluster.pod_env import RAY_TOKEN_KEY
    from llmserve.config import ApiKeyFromEnv

    keys = [k.env for k in config.ingress.api_keys if isinstance(k, ApiKeyFromEnv)]
    literals = [f"--from-literal={name}=..." for name in dict.fromkeys([*keys, "HF_TOKEN"])]
    literals.append(f'--from-literal={RAY_TOKEN_KEY}="$(openssl rand -hex 32)"')
    target = args.output or "rayservice.yaml"
    lines = [
        "deploy it with (HF_TOKEN is optional):",
        f"  kubectl create secret generic {args.secret} \\",
        *(f"      {literal} \\" for literal in literals[:-1]),
        f"      {literals[-1]}",
        f"  kubectl apply -f {target}",
        f"the NetworkPolicy {policy['metadata']['name']} lets other pods reach port "
        f"{config.ingress.port} only, and the KubeRay operator (namespace "
        f"{args.operator_namespace}) the dashboard; to open the dashboard yourself:",
        f"  kubectl port-forward service/{args.name}-head-svc {DASHBOARD_PORT}",
        f"  (it asks for the Ray token: kubectl get secret {args.secret} "
        f"-o jsonpath='{{.data.{RAY_TOKEN_KEY}}}' | base64 -d)",
    ]
    print("\n".join(lines), file=stream)


def check_cluster_fit(config: AppConfig, address: str | None, config_path: Path) -> bool:
    """Print whether the config's placement fits the connected cluster; True when it does."""
    from llmserve.cluster.nodes import fit_report

    report = fit_report(config)
    where = f"the cluster at {address}" if address else "the cluster"
    stream = sys.stdout if report.ok else sys.stderr
    verdict = "fits" if report.ok else "does not fit"
    print(f"{config_path} {verdict} {where} ({report.cluster_summary()}):", file=stream)
    for line in report.lines():
        print(f"  {line}", file=stream)
    return report.ok
