"""Canaries for the Ray pieces under the prefix-aware router (llmserve/compat/ray_router.py,
servers/routing/router.py): each fails when Ray changes what the router relies on."""

from __future__ import annotations

import inspect

import pytest

from llmserve.compat.ray_router import PrefixTree, allow_backoff

pytestmark = pytest.mark.unit


def test_the_prefix_tree_matches_the_longest_prefix_per_tenant() -> None:
    tree = PrefixTree()
    tree.add_tenants(["a", "b"], 1.0)
    tree.insert("hello world", "a", 2.0)
    tree.insert("hello there", "b", 3.0)
    assert tree.prefix_match("hello world, again", ["a", "b"]) == ("hello world", ["a"])
    assert tree.prefix_match("hello you", ["a", "b"])[0] == "hello "
    # only the tenants asked about count
    assert tree.prefix_match("hello world", ["b"]) == ("hello ", ["b"])
    assert tree.tenant_to_char_count == {"a": len("hello world"), "b": len("hello there")}


def test_the_prefix_tree_evicts_least_recent_first_and_forgets_removed_tenants() -> None:
    tree = PrefixTree()
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
    assert params("initialize_state") == ["self", "kwargs"]
    assert isinstance(RequestRouter.replica_queue_len_cache, property)


def test_serve_tells_the_router_which_replica_took_a_request() -> None:
    # on_request_routed is where the router learns what a replica holds.
    from ray.serve._private.router import AsyncioRouter

    source = inspect.getsource(AsyncioRouter)
    assert "on_request_routed(" in source
    assert "initialize_state(**(self._request_router_kwargs))" in source


def test_serve_backs_off_only_when_the_router_allows_it() -> None:
    import asyncio

    from ray.serve.request_router import PendingRequest, RequestRouter

    async def make() -> PendingRequest:
        return PendingRequest(args=[], kwargs={}, metadata=None)

    pr = asyncio.run(make())
    assert pr.routing_context.should_backoff is False
    allow_backoff(pr)
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
