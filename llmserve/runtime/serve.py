"""Serve: deploy the app, wait until it is healthy, report its status, drain and stop it."""

from __future__ import annotations

import threading
import time
from typing import Any

from llmserve.config import AppConfig
from llmserve.engine import reaper
from llmserve.runtime.ray import ingress_deployment

_SERVE_STOP_S = 5.0


class DeployError(RuntimeError):
    pass


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
    return ingress_deployment(config).graceful_shutdown_timeout_s


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
