"""The prefix-aware request router: Serve's request-router API around ``PrefixPolicy``.

Serve builds one per deployment handle, in the caller's process (the ingress
replica, a RAG pipeline router replica), from the model deployment's
``request_router_config``; every call through that handle is routed here.
A call's arguments are ``(endpoint, body, meta)`` (``servers/protocol.py``).

Why not Ray's own ``PrefixCacheAffinityRouter`` (ray.serve.llm), which this
follows and whose prefix tree it uses:

- it finds the prompt as an argument with a ``messages`` or ``prompt``
  *attribute*, and llmserve's body is a plain dict, so it raises on every
  request; fixed by an override, but then
- its key is the messages' contents run together: roles, tools,
  ``cache_salt`` and the LoRA adapter are not in it, so two tenants (or a
  system prompt and a user message with the same text) would share an
  affinity that the engine's cache never shares;
- it keeps its tree in one detached actor and calls it with a blocking
  ``ray.get`` two or three times per request, inside the router's event
  loop, which every request to every deployment of that process shares;
  here the tree lives in the caller's process, at the cost that each caller
  (each ingress replica) learns on its own;
- it never falls back on load by default (``imbalanced_threshold`` is
  infinite), and its miss policy (the replica with the smallest tree) ignores
  load; here both are bounded by the load gap (``policy.py``);
- it has no session affinity, and LoRA adapters are not Serve-multiplexed
  models here, so its multiplex routing would not see them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from llmserve.compat.ray import allow_backoff
from llmserve.config.routing import PrefixRouterConfig
from llmserve.observability import metrics
from llmserve.servers.routing.key import RoutingKey, routing_key
from llmserve.servers.routing.policy import PrefixPolicy

logger = logging.getLogger("llmserve")

ROUTER_CLASS = f"{__name__}.PrefixAwareRouter"
"""What a deployment's ``request_router_config`` names."""
UNSENT_TTL_S = 2.0
"""How long the router counts a replica it chose as that replica's load, until Serve
sends the request there (``on_send_request``). Serve's routing task chooses for every
pending request of a burst before the first caller resumes to send its own and count
it in the queue-length cache; without this, a simultaneous burst of one prefix all
went to the prefix's replica. A choice Serve did not follow (that replica was full)
stops counting after this long."""


class PrefixAwareRouter(RequestRouter):
    """Serve request router; configured by ``initialize_state`` (the
    ``request_router_kwargs``: a ``PrefixRouterConfig`` and ``base_model``)."""

    def initialize_state(self, base_model: str | None = None, **settings: Any) -> None:
        self._policy = PrefixPolicy(PrefixRouterConfig(**settings))
        self._base_model = base_model
        self._ids: dict[str, ReplicaID] = {}
        self._deployment = self._deployment_id.name if self._deployment_id else ""
        self._broken_key = False
        self._unsent: dict[object, tuple[str, float]] = {}
        """Requests chosen for and not sent yet: the replica, and when (one per
        request: Serve may ask again for one whose replicas were full)."""

    # -- Serve's hooks ----------------------------------------------------------------

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is not None:
            allow_backoff(pending_request)  # the last rank below is every replica
        by_id = {r.replica_id.to_full_id_str(): r for r in candidate_replicas}
        loads = self._loads(by_id)
        key = self._key(pending_request) if len(by_id) > 1 else None
        choice = self._policy.choose(key, loads)
        metrics.observe_routing(self._deployment, choice.reason)
        ranks = [list(rank) for rank in choice.ranks if rank]
        if not ranks:
            return []
        # Serve takes the first rank's least loaded replica by its cache (the first of
        # equals; unknown and full ones only after probing them), and its cache does not
        # hold this burst's earlier choices yet: make the same pick here by the loads
        # that do, and count it until Serve sends the request.
        cache = self.replica_queue_len_cache
        open_ = [
            r
            for r in ranks[0]
            if loads[r] is not None
            and (cache.get(by_id[r].replica_id) or 0) < by_id[r].max_ongoing_requests
        ]
        if open_:
            pick = min(open_, key=lambda r: loads[r] or 0)
            if pending_request is not None:
                self._unsent[_request_key(pending_request)] = (pick, time.monotonic())
            ranks[0:1] = [[pick], [r for r in ranks[0] if r != pick]]
        return [[by_id[name] for name in rank] for rank in ranks if rank]

    def on_send_request(self, replica_id: ReplicaID) -> None:
        super().on_send_request(replica_id)  # the cache now counts it
        name = replica_id.to_full_id_str()
        oldest = min(
            ((t, k) for k, (r, t) in self._unsent.items() if r == name),
            default=None,
            key=lambda tk: tk[0],
        )
        if oldest is not None:
            del self._unsent[oldest[1]]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        if len(self._ids) > 1 and (key := self._key(pending_request)) is not None:
            self._policy.record(key, replica_id.to_full_id_str())

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._ids = {r.replica_id.to_full_id_str(): r.replica_id for r in replicas}
        self._policy.set_replicas(self._ids)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        name = replica_id.to_full_id_str()
        self._ids.pop(name, None)
        self._policy.remove(name)
        self._unsent = {k: (r, t) for k, (r, t) in self._unsent.items() if r != name}

    # -- load -------------------------------------------------------------------------

    def _loads(self, by_id: dict[str, RunningReplica]) -> dict[str, int | None]:
        """Each replica's ongoing requests as Serve's cache has them (None: unknown),
        plus the ones chosen for it and not sent yet."""
        expired = time.monotonic() - UNSENT_TTL_S
        self._unsent = {k: (r, t) for k, (r, t) in self._unsent.items() if t > expired}
        unsent = Counter(r for r, _ in self._unsent.values())
        cache = self.replica_queue_len_cache
        loads: dict[str, int | None] = {}
        for name, replica in by_id.items():
            cached = cache.get(replica.replica_id)
            loads[name] = (cached or 0) + unsent[name] if unsent[name] else cached
        return loads

    # -- the key ----------------------------------------------------------------------

    def _key(self, pending_request: PendingRequest | None) -> RoutingKey | None:
        if pending_request is None or len(pending_request.args) != 3:
            return None
        endpoint, body, meta = pending_request.args
        settings = self._policy.settings
        try:
            return routing_key(
                endpoint,
                body,
                meta,
                base_model=self._base_model,
                max_chars=settings.max_prefix_chars,
                sessions=settings.session_affinity,
            )
        except Exception:  # a bug here must never fail a request: load-balance it
            if not self._broken_key:
                self._broken_key = True
                logger.exception("%s: no routing key; load-balancing instead", self._deployment)
            return None


def _request_key(pending_request: PendingRequest) -> object:
    """One pending request, across Serve's repeated choices for it."""
    return getattr(pending_request.metadata, "internal_request_id", None) or id(pending_request)
