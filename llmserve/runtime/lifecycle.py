"""Ray and Serve lifecycle: connect or start Ray, deploy, wait, report status."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

from llmserve.config import AppConfig
from llmserve.engine import reaper
from llmserve.models import is_builtin, prepare_builtin
from llmserve.models.builtin import builtin_name

logger = logging.getLogger("llmserve")


DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # HAProxy replays a request whose ingress replica answered 503 before any
    # byte (its fused engine is restarting, or it is draining) on another
    # replica; Serve's default retries connection failures only.
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response 503",
}


_SERVE_STOP_S = 5.0


class DeployError(RuntimeError):
    pass


def builtin_models(config: AppConfig) -> list[str]:
    """Names of the built-in models a config uses."""
    engines = [*config.models, *config.embedders, *config.rerankers]
    return sorted({builtin_name(c.source) for c in engines if is_builtin(c.source)})


def prepare_models(config: AppConfig) -> None:
    """Prepare built-in models once, in the driver, before any replica starts."""
    for name in builtin_models(config):
        prepare_builtin(name, config.home_dir())


def connect(
    address: str | None,
    num_cpus: float | None = None,
    direct_ingress: bool = False,
    separate_user_code_thread: bool = True,
    env: dict[str, str] | None = None,
) -> None:
    """Connect to a Ray cluster, or start an embedded local one if ``address`` is None.

    ``direct_ingress`` (local Ray only) turns on Serve's HAProxy + direct
    ingress mode: HAProxy forwards HTTP straight to the ingress replicas,
    which removes the Python proxy, and one process hop per token chunk.
    ``separate_user_code_thread=False`` runs deployment code on each
    replica's event loop (all llmserve deployment methods are async), which
    saves a cross-thread hop per chunk. ``env`` (``RayConfig.process_env``) is
    put into the local Ray's environment. Serve reads these flags when it
    starts, so a remote cluster must be started with them in its environment.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        # "local" always starts a new Ray, never attaches to one already running here.
        kwargs.update(address="local", num_cpus=num_cpus)
        os.environ.update(env or {})
        if direct_ingress:
            os.environ.update(DIRECT_INGRESS_ENV)
            # HAProxy's own stats and metrics listeners default to fixed ports
            # (8404, 9101); free ones let several local apps run side by side.
            os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = str(pick_port())
            os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(pick_port())
        os.environ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] = (
            "1" if separate_user_code_thread else "0"
        )
    else:
        kwargs["address"] = address
        _use_local_auth_token(address)
    ray.init(**kwargs)


def _use_local_auth_token(address: str) -> None:
    """Ray 2.60 starts local clusters with token auth (the token in ~/.ray/auth_token),
    and finds it again for ``address="auto"``, but not for an explicit GCS address
    (``llmserve deploy --address 10.0.0.5:6379``): that fails as "Unauthenticated"
    unless token mode is on. Ray's own helper turns it on when a token is at hand
    (and RAY_AUTH_MODE is unset), from any of the places Ray reads tokens from."""
    if address == "auto" or address.startswith("ray://"):
        return
    from llmserve.compat.ray import enable_token_auth_if_token_available

    enable_token_auth_if_token_available()


def deploy(config: AppConfig, timeout_s: float = 900.0) -> None:
    """Deploy (or update in place) the app and wait until it is healthy."""
    from ray import serve

    from llmserve.builder.app import APP_NAME, build_app
    from llmserve.ingress import drain

    app = build_app(config)
    drain.clear()  # a drain flag left by an earlier `llmserve shutdown` must not stop this app
    serve.start(http_options={"host": config.ingress.host, "port": config.ingress.port})
    serve.run(app, name=APP_NAME, route_prefix=config.ingress.route_prefix, blocking=False)
    wait_healthy(timeout_s)


def stop_serving(timeout_s: float, ray_too: bool) -> None:
    """Drain the ingress (in-flight requests finish, new ones get 503) for up to
    ``timeout_s``, then stop Serve (and the local Ray)."""
    import ray
    from ray import serve

    from llmserve.ingress import drain

    try:
        drain.request_drain()
        drained, seconds = drain.wait_drained(timeout_s)
        print(
            f"drained in {seconds:.1f} s"
            if drained
            else f"requests still in flight after {seconds:.1f} s; stopping anyway",
            flush=True,
        )
        if ray_too:
            # Nothing is in flight any more. Serve's own shutdown would still hold
            # each ingress replica for its 30 s minimum draining period (which is
            # what keeps a single-replica ingress serving during a swap), so give
            # it a few seconds to stop HAProxy and the replicas, then stop Ray.
            stopper = threading.Thread(target=serve.shutdown, daemon=True)
            stopper.start()
            stopper.join(_SERVE_STOP_S)
        else:
            serve.shutdown()
    finally:
        if ray_too:
            # Whatever of the local Ray (agents, workers, engines) outlives this
            # process is stopped by a reaper when it exits, however it exits:
            # Ray ends the process itself when the Serve stopper above touches
            # it after ray.shutdown().
            reaper.reap_on_exit(reaper.child_processes())
            ray.shutdown()


def ingress_grace_s(config: AppConfig) -> float:
    """The ingress's ``graceful_shutdown_timeout_s`` (the fused model's, when there is one)."""
    fused = config.ingress.fused_model
    deployment = config.get_model(fused).deployment if fused else config.ingress.deployment
    return deployment.graceful_shutdown_timeout_s


def local_ray_options(config: AppConfig) -> dict[str, Any]:
    """``connect`` keyword arguments for an embedded local Ray, from the config."""
    ray_cfg = config.ray
    return {
        "num_cpus": ray_cfg.num_cpus,
        "direct_ingress": ray_cfg.direct_ingress,
        "separate_user_code_thread": ray_cfg.separate_user_code_thread,
        "env": ray_cfg.process_env(),
    }


# Ports handed out here are bound later (HAProxy starts seconds after Ray), so they
# come from a range that nothing takes by itself meanwhile: below the kernel's
# ephemeral range (where every bind to port 0 lands, Ray's gRPC servers' included),
# above Ray's worker ports (10002-19999), below Serve's direct-ingress ports (30000+).
_PICK_RANGE = range(20000, 30000)


def pick_port(host: str = "0.0.0.0") -> int:
    """A TCP port that is free on ``host`` now and that no port-0 bind can take later."""
    ports = list(_PICK_RANGE)
    random.shuffle(ports)
    for port in ports[:200]:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PICK_RANGE.start}-{_PICK_RANGE.stop - 1}")


def wait_healthy(timeout_s: float) -> None:
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    from llmserve.builder.app import APP_NAME

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(APP_NAME)
        if app is not None and app.status == ApplicationStatus.RUNNING:
            return
        if app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
            raise DeployError(f"deployment failed: {app.message}")
        if time.monotonic() > deadline:
            message = app.message if app is not None else "application not found"
            raise DeployError(f"app not healthy after {timeout_s:.0f}s: {message}")
        time.sleep(1.0)


def status_report() -> dict[str, Any]:
    """Deployments, replica counts by state, and health, as plain data."""
    from ray import serve

    report: dict[str, Any] = {}
    for name, app in serve.status().applications.items():
        report[name] = {
            "status": str(app.status.value if hasattr(app.status, "value") else app.status),
            "message": app.message,
            "deployments": {
                dep_name: {
                    "status": str(getattr(dep.status, "value", dep.status)),
                    "replicas": {
                        str(getattr(k, "value", k)): v for k, v in dep.replica_states.items()
                    },
                    "message": dep.message,
                }
                for dep_name, dep in app.deployments.items()
            },
        }
    return report


def serve_config(config_path: Path, config: AppConfig) -> dict[str, Any]:
    """A Ray Serve config file (for plain ``serve deploy``) running this app."""
    from llmserve.builder.app import APP_NAME

    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": config.ingress.host, "port": config.ingress.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": config.ingress.route_prefix,
                "import_path": "llmserve.builder.app:app_builder",
                "args": {"config_path": str(config_path.resolve())},
            }
        ],
    }
