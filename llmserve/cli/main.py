"""The ``llmserve`` command line.

Every command validates the config before it starts anything, and errors
are printed as one clear message, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

import yaml

EXIT_CONFIG = 2
EXIT_ERROR = 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from llmserve.config import ConfigError

        if args.debug:
            raise
        if isinstance(exc, ConfigError):
            print(f"invalid config {getattr(args, 'config', '')}:\n{exc}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmserve", description="OpenAI-compatible LLM and RAG serving on Ray Serve + vLLM."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser(
        "run", help="start the app on an embedded local Ray (or --address) and block"
    )
    p.add_argument("config", type=Path, help="YAML config file")
    p.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    p.add_argument("--host", help="override ingress.host")
    p.add_argument("--port", type=int, help="override ingress.port")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("deploy", help="deploy or update the app on a running Ray cluster")
    p.add_argument("config", type=Path, help="YAML config file")
    p.add_argument(
        "--address", required=True, help="Ray cluster address, e.g. auto or ray://host:10001"
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds to wait for health")
    p.add_argument(
        "--no-fit-check",
        action="store_true",
        help="deploy even if the nodes that exist now cannot hold the placement groups "
        "(e.g. an autoscaling cluster that adds nodes on demand)",
    )
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("validate", help="check a config and report every problem")
    p.add_argument("config", type=Path, help="YAML config file")
    p.add_argument(
        "--address", help="also check that the placement groups fit this Ray cluster's nodes"
    )
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("status", help="deployments, replicas and health of the running app")
    p.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("shutdown", help="shut down Serve (all apps) on a running cluster")
    p.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    p.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds in-flight requests get to finish before Serve stops (default: 20)",
    )
    p.set_defaults(func=cmd_shutdown)

    from llmserve.cli.cluster import add_kuberay_args

    p = sub.add_parser("build", help="write a Ray Serve config file for plain `serve deploy`")
    p.add_argument("config", type=Path, help="YAML config file")
    p.add_argument(
        "-o", "--output", type=Path, help="output path, e.g. serve.yaml (--kuberay: default stdout)"
    )
    add_kuberay_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("models", help="built-in models")
    msub = p.add_subparsers(title="models commands")
    mp = msub.add_parser("prepare", help="prepare built-in models (idempotent)")
    mp.add_argument(
        "names", nargs="*", help="built-in names (default: all, or those a --config uses)"
    )
    mp.add_argument("--config", type=Path, help="prepare only the built-ins this config uses")
    mp.set_defaults(func=cmd_models_prepare)
    ml = msub.add_parser("list", help="list built-in models")
    ml.set_defaults(func=cmd_models_list)

    from llmserve.cli.rag import add_rag_commands

    add_rag_commands(sub)

    from llmserve.cli.evaluation.command import add_eval_command

    add_eval_command(sub)
    return parser


def _load(path: Path):
    from llmserve.config import load_config
    from llmserve.engine.flavour import installed_vllm

    installed_vllm()  # no vLLM (or two): say so before anything else
    return load_config(path)


def cmd_validate(args) -> int:
    config = _load(args.config)
    print(f"{args.config}: OK ({_summary(config)})")
    if args.address is None:
        return 0
    import ray

    from llmserve.cli.cluster import EXIT_NO_FIT, check_cluster_fit
    from llmserve.runtime.ray import connect

    connect(args.address)
    try:
        return 0 if check_cluster_fit(config, args.address, args.config) else EXIT_NO_FIT
    finally:
        ray.shutdown()


def cmd_run(args) -> int:
    from llmserve.models import prepare_models
    from llmserve.runtime.ports import check_free
    from llmserve.runtime.ray import connect, local_ray_options, stop_local_ray_with_this_process
    from llmserve.runtime.serve import deploy, ingress_grace_s, stop_serving

    config = _load(args.config)
    if not (args.address or config.ray.address):
        _check_local_engines(config)
    if args.host is not None or args.port is not None:
        # Validated again: --host 0.0.0.0 without keys is refused like the config line.
        config.ingress = config.ingress.with_address(host=args.host, port=args.port)
    warning = config.ingress.open_warning()
    if warning:
        print(warning, file=sys.stderr, flush=True)
    address = args.address or config.ray.address
    if address is None:
        # The local Ray inherits this environment, so {env: NAME} keys must
        # be set here; fail before anything starts. (A remote cluster reads
        # them from its own environment, in the ingress replica.)
        config.ingress.resolve_all_keys()
        check_free(config.ingress.host, config.ingress.port)
    prepare_models(config)
    _before_serving(config)
    connect(address, **local_ray_options(config))
    if address is None:
        stop_local_ray_with_this_process()
    stop = threading.Event()
    # Set both explicitly: a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        deploy(config)
        url = f"http://{config.ingress.host}:{config.ingress.port}{_prefix(config)}/v1"
        print(f"llmserve is serving {_summary(config)} at {url} (Ctrl-C to stop)", flush=True)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C skips the drain.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("stopping: draining in-flight requests (Ctrl-C again to skip)", flush=True)
        stop_serving(ingress_grace_s(config), ray_too=True)
    return 0


def cmd_deploy(args) -> int:
    from llmserve.cli.cluster import EXIT_NO_FIT, check_cluster_fit
    from llmserve.models import prepare_models
    from llmserve.runtime.ray import connect
    from llmserve.runtime.serve import deploy

    config = _load(args.config)
    connect(args.address)
    if not args.no_fit_check and not check_cluster_fit(config, args.address, args.config):
        print("nothing was deployed (--no-fit-check deploys anyway)", file=sys.stderr)
        return EXIT_NO_FIT
    prepare_models(config)
    _before_serving(config)
    deploy(config, timeout_s=args.timeout)
    print(f"deployed: {_summary(config)}")
    return 0


def cmd_status(args) -> int:
    from llmserve.runtime.ray import connect
    from llmserve.runtime.serve import status_report

    connect(args.address)
    report = status_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report:
        print("no Serve applications running")
    for app, info in report.items():
        print(f"{app}: {info['status']}")
        for dep, d in info["deployments"].items():
            replicas = ", ".join(f"{n} {s}" for s, n in d["replicas"].items()) or "no replicas"
            print(f"  {dep}: {d['status']} ({replicas})")
    return 0


def cmd_shutdown(args) -> int:
    from llmserve.runtime.ray import connect
    from llmserve.runtime.serve import stop_serving

    connect(args.address)
    stop_serving(args.grace, ray_too=False)
    print("Serve shut down")
    return 0


def cmd_build(args) -> int:
    from llmserve.builder.serve_config import serve_config

    config = _load(args.config)
    if args.kuberay:
        from llmserve.cli.cluster import write_kuberay

        return write_kuberay(args, config)
    if args.output is None:
        raise ValueError("build needs -o/--output (only --kuberay can write to stdout)")
    args.output.write_text(yaml.safe_dump(serve_config(args.config, config), sort_keys=False))
    print(f"wrote {args.output}; deploy it with: serve deploy {args.output}")
    return 0


def cmd_models_prepare(args) -> int:
    from llmserve.models import BUILTIN_PREFIX, BUILTINS, builtin_models, prepare_builtin

    home = None
    names = list(args.names)
    if args.config:
        config = _load(args.config)
        home = config.home_dir()
        names += builtin_models(config)
    for name in sorted(set(names or BUILTINS)):
        if name not in BUILTINS:
            raise ValueError(f"unknown built-in model '{name}'; known: {', '.join(BUILTINS)}")
        print(f"{BUILTIN_PREFIX}{name} -> {prepare_builtin(name, home)}")
    return 0


def cmd_models_list(args) -> int:
    from llmserve.models import BUILTIN_PREFIX, BUILTINS

    for name, model in BUILTINS.items():
        print(f"{BUILTIN_PREFIX}{name}\t{model.description}")
    return 0


def _check_local_engines(config) -> None:
    """On an embedded local Ray the engines use this environment's vLLM: it must fit the config."""
    from llmserve.engine.flavour import VllmInstallError, config_mismatches, installed_vllm

    problems = config_mismatches(config, installed_vllm())
    if problems:
        raise VllmInstallError("\n".join(problems))


def _before_serving(config) -> None:
    """Hook for work that must happen before the app starts (RAG indexes)."""
    from llmserve.rag.index_job import ensure_indexes

    ensure_indexes(config)


def _prefix(config) -> str:
    return config.ingress.route_prefix.rstrip("/")


def _summary(config) -> str:
    ids = [m.id for m in config.models] + [p.id for p in config.pipelines]
    return "models: " + ", ".join(ids) if ids else "no models"


if __name__ == "__main__":
    sys.exit(main())
