"""Ray: connect to a cluster or start an embedded local one, with the flags Serve reads.

Serve reads its flags from the environment when it starts. ``serve_env`` is
the one place that turns a config into those flags: a local Ray gets them
from this process's environment, KubeRay pods from the manifest
(``cluster/kuberay.py``), and a remote cluster must be started with them.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmserve.config import AppConfig
from llmserve.config.deployment import DeploymentConfig
from llmserve.engine import reaper
from llmserve.runtime import haproxy
from llmserve.runtime.ports import pick_port

DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # HAProxy replays a request whose ingress replica answered 503 before any
    # byte (its fused engine is restarting, or it is draining) on another
    # replica; Serve's default retries connection failures only.
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response 503",
}
USER_CODE_THREAD = "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"
HAPROXY_SERVER_GRACE_S = 5
"""How much longer than the longest request timeout HAProxy waits for a replica's answer:
the ingress answers 504 itself at the deadline, and needs a moment to send it."""


@dataclass(frozen=True)
class Install:
    """Where llmserve is installed on the machines that run Ray (HAProxy runs its launcher)."""

    python: str
    package: str
    """The folder of the ``llmserve`` package."""

    @property
    def haproxy_launcher(self) -> str:
        return str(Path(self.package) / haproxy.LAUNCHER.relative_to(_PACKAGE))


_PACKAGE = Path(__file__).resolve().parents[1]
LOCAL = Install(python=sys.executable, package=str(_PACKAGE))


def serve_env(config: AppConfig, install: Install = LOCAL) -> dict[str, str]:
    """The environment Ray and Serve must start with for this config.

    ``direct_ingress`` turns on Serve's HAProxy + direct ingress mode: HAProxy
    forwards HTTP straight to the ingress replicas, which removes the Python
    proxy, and one process hop per token chunk; ``haproxy_env`` configures
    that HAProxy. ``separate_user_code_thread`` off runs deployment code on
    each replica's event loop (all llmserve deployment methods are async),
    which saves a cross-thread hop per chunk. ``RayConfig.process_env`` adds
    the idle-cost settings.
    """
    ray_config = config.ray
    env = {}
    if ray_config.direct_ingress:
        env = {**DIRECT_INGRESS_ENV, **haproxy_env(config, install)}
    env[USER_CODE_THREAD] = "1" if ray_config.separate_user_code_thread else "0"
    env.update(ray_config.process_env())
    return env


def haproxy_env(config: AppConfig, install: Install = LOCAL) -> dict[str, str]:
    """HAProxy's timeouts, and llmserve's launcher with its settings (``runtime/haproxy.py``).

    - ``timeout server`` (how long HAProxy waits for a replica's next byte):
      longer than any request may take, so that the ingress's own answer at the
      deadline (504, or a stream's error event) is what the client gets. A
      stream also sends a ping every 15 s, so it is never idle that long.
    - ``timeout client`` (how long HAProxy waits for the client's next byte, or
      for it to take the next ones): ``ingress.send_timeout_s``, the ingress's
      own limit for a client that accepts no bytes. It also bounds each pause
      while a client sends its request (HAProxy answers 408 then); HAProxy does
      not apply it while the client merely waits for the answer.
    """
    return {
        "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": str(
            math.ceil(longest_request_timeout_s(config)) + HAPROXY_SERVER_GRACE_S
        ),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(math.ceil(config.ingress.send_timeout_s)),
        haproxy.BINARY_ENV: install.haproxy_launcher,
        haproxy.PYTHON_ENV: install.python,
        haproxy.RETRY_AFTER_ENV: str(config.ingress.retry_after_s),
        # Serve's Python proxy behind HAProxy is what scales an ingress up from zero.
        haproxy.FALLBACK_ENV: "1" if ingress_deployment(config).replica_bounds().min == 0 else "0",
    }


def longest_request_timeout_s(config: AppConfig) -> float:
    """The longest end-to-end limit of any request: the ingress's, a model's or a pipeline's."""
    own = [m.request_timeout_s for m in config.models] + [
        p.request_timeout_s for p in config.pipelines
    ]
    return max([config.ingress.request_timeout_s, *(t for t in own if t is not None)])


def ingress_deployment(config: AppConfig) -> DeploymentConfig:
    """The ingress's Serve settings: the fused model's, when there is one."""
    fused = config.ingress.fused_model
    return config.get_model(fused).deployment if fused else config.ingress.deployment


def local_ray_options(config: AppConfig) -> dict[str, Any]:
    """``connect`` keyword arguments for an embedded local Ray, from the config."""
    env = serve_env(config)
    if config.ray.direct_ingress:
        # HAProxy's own stats and metrics listeners, and Serve's fallback proxy,
        # default to fixed ports (8404, 9101, 8500); free ones let several local
        # apps run side by side.
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(pick_port())
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(pick_port())
        env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] = str(pick_port())
    return {"num_cpus": config.ray.num_cpus, "env": env}


def connect(
    address: str | None, num_cpus: float | None = None, env: Mapping[str, str] | None = None
) -> None:
    """Connect to a Ray cluster, or start an embedded local one if ``address`` is None.

    A local Ray inherits this process's environment, so ``env`` (see
    ``local_ray_options``) is put into it first; a remote cluster ignores it.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if address is None:
        # "local" always starts a new Ray, never attaches to one already running here.
        kwargs.update(address="local", num_cpus=num_cpus)
        os.environ.update(env or {})
    else:
        kwargs["address"] = address
        _use_local_auth_token(address)
    ray.init(**kwargs)


def stop_local_ray_with_this_process() -> None:
    """Have the local Ray this process started stopped when it ends, however it ends.

    Every process below this one is watched, also those started later, and
    every HAProxy of this Ray node (Serve starts a new one on each reload):
    see ``engine/reaper.py``. Without this a SIGKILL of ``llmserve run``'s
    process group left HAProxy on the app's port, answering 500 to every request.
    """
    import ray

    from llmserve.compat.ray import haproxy_config_path

    reaper.reap_descendants_on_exit()
    reaper.reap_by_arg_on_exit(haproxy_config_path(ray.get_runtime_context().get_node_id()))


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
