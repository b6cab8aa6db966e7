"""The private Ray pieces under llmserve's prefix-aware request router.

Serve's request-router API itself is public (``ray.serve.request_router``:
``RequestRouter``, ``PendingRequest``, ``RunningReplica``, ``ReplicaID``),
and ``servers/routing/router.py`` imports it from there. Two things it relies
on are not, and are reached only through this module; their canaries are in
``tests/unit/compat/test_ray_router.py``:

- ``PrefixTree``, the multi-tenant radix tree with per-tenant LRU eviction of
  Ray's own ``PrefixCacheAffinityRouter`` (``ray.llm._internal``). llmserve
  keeps one in the caller's process instead of in a shared actor (see the
  router's docstring for why).
- ``PendingRequest.routing_context.should_backoff``: Serve's routing loop calls
  ``choose_replicas`` again at once, without backing off, unless a router sets
  it; Serve's own routers set it when they hand back every replica, and so
  must any other, or a request whose replicas are all full spins the loop.
"""

from __future__ import annotations

from typing import Any

from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_tree import PrefixTree

__all__ = ["PrefixTree", "allow_backoff"]


def allow_backoff(pending_request: Any) -> None:
    """Let Serve back off before asking again when none of the replicas chosen
    for ``pending_request`` could take it."""
    pending_request.routing_context.should_backoff = True
