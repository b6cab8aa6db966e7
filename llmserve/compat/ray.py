"""Ray and Ray Serve internals llmserve relies on.

Ray is pinned (``ray[serve]==2.60.0``); these are the places where llmserve
reaches past Ray's public API, each for a reason given in its docstring. The
canaries are in ``tests/unit/compat/test_ray.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ray.serve import Application
    from ray.serve.deployment import Deployment
    from ray.serve.handle import DeploymentBroadcastResponse


# -- deployment versions ---------------------------------------------------------


def bind_with_version(deployment: Deployment, version: str, *args: Any) -> Application:
    """``deployment.bind(*args)`` with a fixed deployment version.

    Serve removed ``version`` from the public ``options()`` and gives every
    deployment a random one on each ``serve.run``, which restarts every replica
    on every deploy. ``_internal=True`` (what Serve passes itself) still
    accepts it, and Serve's deploy path keeps a version that is set.
    """
    return deployment.options(version=version, _internal=True).bind(*args)


def bound_deployment(app: Application) -> Deployment:
    """The deployment an ``Application`` (a ``.bind()`` result) deploys;
    Serve keeps it in a private attribute."""
    return app._bound_deployment


# -- token authentication ------------------------------------------------------------


def enable_token_auth_if_token_available() -> bool:
    """Turn Ray's token authentication on for this process (``RAY_AUTH_MODE=token``)
    when a token is at hand and the mode is unset; True when token mode is on.

    Ray does this itself for ``address="auto"``, not for an explicit GCS
    address; only its private helper knows every place Ray reads tokens from.
    """
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


# -- Ray's key-value store (GCS) -------------------------------------------------------
#
# ``ray.experimental.internal_kv`` is the only cluster-wide store reachable
# from both the driver and every replica without an actor of our own. Its
# functions are private (underscored); they need a connected Ray.


def kv_put(key: bytes, value: bytes, namespace: str) -> None:
    """Store ``value`` under ``key``, replacing any earlier value."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(key, value, True, namespace=namespace)


def kv_get(key: bytes, namespace: str) -> bytes | None:
    """The value under ``key``; None if there is none."""
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_get(key, namespace=namespace)


def kv_keys(prefix: bytes, namespace: str) -> list[bytes]:
    """Every key that starts with ``prefix``."""
    from ray.experimental import internal_kv

    return internal_kv._internal_kv_list(prefix, namespace=namespace)


def kv_delete(key: bytes, namespace: str) -> None:
    """Remove ``key`` (nothing happens if it is not there)."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(key, namespace=namespace)


# -- broadcast calls ---------------------------------------------------------------------


class ReplicaCall(Protocol):
    """One replica's answer to a broadcast call."""

    async def get_async(self) -> Any: ...


async def replica_calls(response: DeploymentBroadcastResponse) -> list[ReplicaCall]:
    """Each replica's call of a ``handle.broadcast(...)``, to be awaited one by one.

    The public ``results_async()`` times the broadcast out as a whole, so one
    stuck replica would hide all of its deployment's answers; the per-replica
    calls are only reachable through a private method. Should it go, every
    replica's result is awaited together instead.
    """
    fetch = getattr(response, "_fetch_replica_results_async", None)
    if fetch is not None:
        return await fetch()
    results = await response.results_async(return_exceptions=True)
    return [_Done(result) for result in results]


@dataclass
class _Done:
    """A result that has already arrived, as a ``ReplicaCall``."""

    value: Any

    async def get_async(self) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


# -- Serve's HAProxy -----------------------------------------------------------------


def haproxy_config_path(node_id: str) -> str:
    """The config file of the HAProxy that Serve runs on node ``node_id``: the
    HAProxyManager puts each node's files in a folder named after the node, under
    the folder of ``RAY_SERVE_HAPROXY_CONFIG_FILE_LOC`` (``_per_node`` in
    ray/serve/_private/haproxy.py). HAProxy is started with ``-f <this path>``,
    which is how ``llmserve run`` finds every HAProxy of its local Ray."""
    folder, name = os.path.split(_haproxy_config_file_loc())
    return os.path.join(folder, node_id, name)


def haproxy_config_root() -> str:
    """The folder that holds every node's HAProxy folder (``/tmp/haproxy-serve``)."""
    return os.path.dirname(_haproxy_config_file_loc())


def _haproxy_config_file_loc() -> str:
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_CONFIG_FILE_LOC

    return RAY_SERVE_HAPROXY_CONFIG_FILE_LOC
