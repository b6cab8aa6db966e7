"""Canaries for the Ray internals in llmserve/compat/ray.py.

Each test fails when Ray changes what llmserve relies on; the tests named
``..._can_fail`` show that the check behind a canary reports such a change.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ray import serve

from llmserve.compat import ray as ray_compat

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


@serve.deployment
class _Echo:
    def __init__(self, *args: Any) -> None:
        self.args = args


# -- deployment versions --------------------------------------------------------------


def test_a_bound_deployment_keeps_the_version_given() -> None:
    app = ray_compat.bind_with_version(_Echo, "v-123", 1, "x")
    deployment = ray_compat.bound_deployment(app)
    assert (deployment.name, deployment.version) == ("_Echo", "v-123")
    assert deployment.init_args == (1, "x")


def test_serve_keeps_the_version_when_it_builds_and_deploys_the_app() -> None:
    from ray.serve._private.build_app import build_app
    from ray.serve._private.client import ServeControllerClient

    inner = ray_compat.bind_with_version(_Echo.options(name="inner"), "v-inner")
    outer = ray_compat.bind_with_version(_Echo.options(name="outer"), "v-outer", inner)
    built = build_app(outer, name="app")
    assert {d.name: d.version for d in built.deployments} == {
        "inner": "v-inner",
        "outer": "v-outer",
    }
    # The deploy call sends a set version, and draws a random one only for none.
    source = inspect.getsource(ServeControllerClient.deploy_applications)
    assert "version=deployment._version or get_random_string()" in source


# -- token authentication ----------------------------------------------------------------


def _auth_mode_after(code: str, token: str | None, tmp_path: Path) -> str:
    """RAY_AUTH_MODE after ``code`` runs in a fresh process whose only token is ``token``."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    script = f"{code}\nimport os\nprint(os.environ.get('RAY_AUTH_MODE'))"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


ENABLE = (
    "from llmserve.compat.ray import enable_token_auth_if_token_available as enable\n"
    "print(enable())"
)


def test_token_auth_is_turned_on_when_a_token_is_at_hand(tmp_path) -> None:
    assert _auth_mode_after(ENABLE, "0123456789abcdef", tmp_path) == "token"


def test_token_auth_stays_off_without_a_token(tmp_path) -> None:
    assert _auth_mode_after(ENABLE, None, tmp_path) == "None"


# -- Ray's key-value store ------------------------------------------------------------------


class _Gcs:
    """A GCS key-value store in a dict, with the methods Ray's GcsClient has."""

    def __init__(self) -> None:
        self.data: dict[tuple[bytes, bytes], bytes] = {}

    def internal_kv_put(self, key: bytes, value: bytes, overwrite: bool, namespace: bytes) -> int:
        added = (namespace, key) not in self.data
        if added or overwrite:
            self.data[(namespace, key)] = value
        return int(added)

    def internal_kv_get(self, key: bytes, namespace: bytes) -> bytes | None:
        return self.data.get((namespace, key))

    def internal_kv_keys(self, prefix: bytes, namespace: bytes) -> list[bytes]:
        return [k for n, k in self.data if n == namespace and k.startswith(prefix)]

    def internal_kv_del(self, key: bytes, del_by_prefix: bool, namespace: bytes) -> int:
        return int(self.data.pop((namespace, key), None) is not None)


@pytest.fixture
def gcs(monkeypatch) -> _Gcs:
    from ray.experimental import internal_kv

    store = _Gcs()
    monkeypatch.setattr(internal_kv, "global_gcs_client", store)
    return store


def test_the_key_value_store_round_trips_through_rays_functions(gcs) -> None:
    ray_compat.kv_put(b"inflight:a", b"3", "llmserve")
    ray_compat.kv_put(b"inflight:a", b"2", "llmserve")  # replaces
    ray_compat.kv_put(b"draining", b"1", "llmserve")
    ray_compat.kv_put(b"inflight:b", b"9", "other")
    assert ray_compat.kv_get(b"inflight:a", "llmserve") == b"2"
    assert ray_compat.kv_get(b"missing", "llmserve") is None
    assert ray_compat.kv_keys(b"inflight:", "llmserve") == [b"inflight:a"]
    ray_compat.kv_delete(b"inflight:a", "llmserve")
    assert ray_compat.kv_keys(b"inflight:", "llmserve") == []
    assert gcs.data == {(b"llmserve", b"draining"): b"1", (b"other", b"inflight:b"): b"9"}


# -- broadcast calls ------------------------------------------------------------------------


class _Result:
    """A replica's result, as Ray's ReplicaResult is awaited."""

    def __init__(self, value: Any) -> None:
        self.value = value

    async def get_async(self) -> Any:
        return self.value


def _calls(response_cls: type) -> list[Any]:
    """What replica_calls returns for a broadcast answered by two replicas."""
    results = [_Result("a"), _Result("b")]

    async def broadcast() -> list[_Result]:
        return results

    async def run() -> list[Any]:
        # No router loop: Serve's local testing mode, which awaits the coroutine itself.
        return await ray_compat.replica_calls(response_cls(broadcast(), None))

    calls = asyncio.run(run())
    assert [asyncio.run(c.get_async()) for c in calls] == ["a", "b"]
    return [c for c in calls if c in results]


def test_a_broadcast_hands_out_each_replicas_own_call() -> None:
    from ray.serve.handle import DeploymentBroadcastResponse

    assert len(_calls(DeploymentBroadcastResponse)) == 2


def test_the_broadcast_check_can_fail() -> None:
    """Without the private method the answers still arrive, but not one call per replica."""
    from ray.serve.handle import DeploymentBroadcastResponse

    class Renamed:
        """Ray's response if the private method were renamed: the public API is left."""

        def __init__(self, coro: Any, loop: None) -> None:
            self._response = DeploymentBroadcastResponse(coro, loop)

        async def results_async(self, *, return_exceptions: bool = False) -> list[Any]:
            return await self._response.results_async(return_exceptions=return_exceptions)

    assert _calls(Renamed) == []


# -- Serve's HAProxy -----------------------------------------------------------------


def test_haproxys_config_path_is_where_the_haproxy_manager_puts_it() -> None:
    """HAProxyManager names the config file by ``_per_node`` (folder/<node id>/file)."""
    import ray.serve._private.haproxy as haproxy
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_CONFIG_FILE_LOC

    source = inspect.getsource(haproxy)
    assert "config_file_path=_per_node(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC)" in source
    assert "return os.path.join(d, self._node_id, f)" in source
    folder, name = os.path.split(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC)
    assert ray_compat.haproxy_config_path("n1") == os.path.join(folder, "n1", name)
    assert ray_compat.haproxy_config_root() == folder


# -- the prefix-aware request router (servers/routing/router.py) ----------------------


def test_the_prefix_tree_matches_the_longest_prefix_per_tenant() -> None:
    tree = ray_compat.prefix_tree()
    tree.add_tenants(["a", "b"], 1.0)
    tree.insert("hello world", "a", 2.0)
    tree.insert("hello there", "b", 3.0)
    assert tree.prefix_match("hello world, again", ["a", "b"]) == ("hello world", ["a"])
    assert tree.prefix_match("hello you", ["a", "b"])[0] == "hello "
    # only the tenants asked about count
    assert tree.prefix_match("hello world", ["b"]) == ("hello ", ["b"])
    assert tree.tenant_to_char_count == {"a": len("hello world"), "b": len("hello there")}


def test_the_prefix_tree_evicts_least_recent_first_and_forgets_removed_tenants() -> None:
    tree = ray_compat.prefix_tree()
    tree.add_tenants(["a"], 0.0)
    tree.insert("old text", "a", 1.0)
    tree.insert("new text", "a", 2.0)
    removed = tree.evict_tenant_by_lru("a", 1)
    assert removed == len("old text")
    assert tree.prefix_match("old text", ["a"])[0] == ""
    assert tree.prefix_match("new text", ["a"])[0] == "new text"
    tree.remove_tenants(["a"])
    assert "a" not in tree.tenant_to_char_count
    assert tree.prefix_match("new text", ["a"]) == ("", None)


def test_the_request_router_hooks_keep_their_signatures() -> None:
    from ray.serve.request_router import RequestRouter

    def params(name: str) -> list[str]:
        return list(inspect.signature(getattr(RequestRouter, name)).parameters)

    assert params("choose_replicas") == ["self", "candidate_replicas", "pending_request"]
    assert params("on_request_routed") == ["self", "pending_request", "replica_id", "result"]
    assert params("update_replicas") == ["self", "replicas"]
    assert params("on_replica_actor_died") == ["self", "replica_id"]
    assert params("on_send_request") == ["self", "replica_id"]
    assert params("initialize_state") == ["self", "kwargs"]
    assert isinstance(RequestRouter.replica_queue_len_cache, property)


def test_serve_tells_the_router_which_replica_took_a_request() -> None:
    # on_request_routed is where the router learns what a replica holds.
    from ray.serve._private.router import AsyncioRouter

    source = inspect.getsource(AsyncioRouter)
    assert "on_request_routed(" in source
    # on_send_request is where a request the router chose starts counting in the cache.
    assert "on_send_request(replica.replica_id)" in source
    assert "initialize_state(**(self._request_router_kwargs))" in source


def test_serve_backs_off_only_when_the_router_allows_it() -> None:
    from ray.serve.request_router import PendingRequest, RequestRouter

    async def make() -> PendingRequest:
        return PendingRequest(args=[], kwargs={}, metadata=None)

    pr = asyncio.run(make())
    assert pr.routing_context.should_backoff is False
    ray_compat.allow_backoff(pr)
    assert pr.routing_context.should_backoff is True
    loop = inspect.getsource(RequestRouter._choose_replicas_with_backoff)
    assert "not pending_request.routing_context.should_backoff" in loop


def test_a_deployment_accepts_the_router_by_import_path() -> None:
    from ray.serve.config import RequestRouterConfig

    from llmserve.servers.routing.router import ROUTER_CLASS, PrefixAwareRouter

    config = RequestRouterConfig(
        request_router_class=ROUTER_CLASS, request_router_kwargs={"base_model": "m"}
    )
    assert config.get_request_router_class() is PrefixAwareRouter
