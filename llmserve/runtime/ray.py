"""Ray: connect to a cluster or start an embedded local one, with the flags Serve reads.

Serve reads its flags from the environment when it starts. ``serve_env`` is
the one place that turns a config's ``ray`` block into those flags: a local
Ray gets them from this process's environment, KubeRay pods from the
manifest (``cluster/kuberay.py``), and a remote cluster must be started with them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from llmserve.config import AppConfig, RayConfig
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


def serve_env(ray_config: RayConfig) -> dict[str, str]:
    """The environment Ray and Serve must start with for this config.

    ``direct_ingress`` turns on Serve's HAProxy + direct ingress mode: HAProxy
    forwards HTTP straight to the ingress replicas, which removes the Python
    proxy, and one process hop per token chunk. ``separate_user_code_thread``
    off runs deployment code on each replica's event loop (all llmserve
    deployment methods are async), which saves a cross-thread hop per chunk.
    ``RayConfig.process_env`` adds the idle-cost settings.
    """
    env = dict(DIRECT_INGRESS_ENV) if ray_config.direct_ingress else {}
    env[USER_CODE_THREAD] = "1" if ray_config.separate_user_code_thread else "0"
    env.update(ray_config.process_env())
    return env


def local_ray_options(config: AppConfig) -> dict[str, Any]:
    """``connect`` keyword arguments for an embedded local Ray, from the config."""
    env = serve_env(config.ray)
    if config.ray.direct_ingress:
        # HAProxy's own stats and metrics listeners default to fixed ports
        # (8404, 9101); free ones let several local apps run side by side.
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(pick_port())
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(pick_port())
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
