"""CLI pieces for getting onto a cluster: the cluster-fit check and ``build --kuberay``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmserve.config import AppConfig

EXIT_NO_FIT = 2


def add_kuberay_args(p: argparse.ArgumentParser) -> None:
    from llmserve.cluster.kuberay import DEFAULT_SECRET
    from llmserve.literals import DEVICES

    p.add_argument(
        "--kuberay", action="store_true", help="write a KubeRay RayService manifest instead"
    )
    p.add_argument("--image", help="--kuberay: container image (default llmserve:gpu or :cpu)")
    p.add_argument("--name", default="llmserve", help="--kuberay: RayService name")
    p.add_argument(
        "--secret",
        default=DEFAULT_SECRET,
        help=f"--kuberay: Secret holding the API keys and HF_TOKEN (default {DEFAULT_SECRET})",
    )
    p.add_argument(
        "--auto-device",
        choices=DEVICES,
        default="gpu",
        help="--kuberay: what device: auto becomes in the manifest (default gpu)",
    )


def write_kuberay(args: argparse.Namespace, config: AppConfig) -> int:
    from llmserve.builder.serve_config import serve_config
    from llmserve.cluster.kuberay import dump_manifest, rayservice
    from llmserve.config.loader import read_config_data

    manifest = rayservice(
        config,
        read_config_data(args.config),
        serve_config(args.config, config),
        name=args.name,
        image=args.image,
        secret=args.secret,
        auto_device=args.auto_device,
    )
    text = dump_manifest(manifest)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    # The summary goes to stderr when the manifest itself goes to stdout.
    info = sys.stdout if args.output else sys.stderr
    for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        gpus = g["rayStartParams"]["num-gpus"]
        print(
            f"worker group {g['groupName']}: {gpus} GPUs per pod, "
            f"{g['minReplicas']}-{g['maxReplicas']} pods (start {g['replicas']})",
            file=info,
        )
    target = args.output or "rayservice.yaml"
    print(
        f"deploy it with: kubectl create secret generic {args.secret} "
        f"--from-literal=NAME=VALUE ... && kubectl apply -f {target}",
        file=info,
    )
    return 0


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
