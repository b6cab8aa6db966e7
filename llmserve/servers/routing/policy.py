"""The prefix-aware router's choice, free of Serve: replicas are plain ids.

For each request, in order:

1. **Load first.** A replica running more than ``imbalance_threshold``
   requests above the least busy one is not *eligible*: it gets no affinity
   traffic and no new prefix until the gap closes. This is what keeps a
   cache-aware router from its known failure, every miss (or every request
   of a hot prefix) piling onto one busy replica.
2. **Session** (with session affinity): the eligible replica that served the
   session last.
3. **Prefix**: the eligible replicas holding the longest prefix of this
   prompt that any replica holds, if it is at least ``min_match_chars`` long.
   When only an ineligible replica holds it, the request *spills* to an
   eligible one, which then holds the prefix too: a hot prefix ends up on
   as many replicas as its load needs.
4. **Adapter**: for a LoRA adapter, the eligible replicas that served it in
   the last ``ADAPTER_MEMORY_S`` (its weights are loaded there).
5. **New** (or spill): the least busy replicas, and of those the ones holding
   the fewest remembered characters, which spreads new prefixes evenly over
   the replicas' caches. Misses are load-balanced: a request that no cache
   helps goes where it waits least.

A choice is a list of ranks: the preferred replicas, then the other eligible
ones, then the rest. Serve takes the least busy replica with a free slot
from the first rank that has one, so a full replica never blocks a request.

What each replica holds is remembered in Ray's ``PrefixTree`` (one tenant per
replica, least recently used characters forgotten beyond
``tracked_chars_per_replica``); a replica that dies or leaves is forgotten
entirely, and a new one starts empty and so takes the next new prefixes.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from llmserve.compat.ray import prefix_tree
from llmserve.config.routing import PrefixRouterConfig
from llmserve.servers.routing.key import RoutingKey

MAX_SESSIONS = 10_000
"""Sessions remembered per caller (least recently used forgotten): about 3 MB.
A forgotten session still finds its replica by its prompt's prefix."""
ADAPTER_MEMORY_S = 60.0
"""How long a replica that served a LoRA adapter counts as having it loaded.
vLLM keeps an adapter's weights while requests use it and evicts the least
recently used one when another needs its slot (``max_loras``)."""
MAX_ADAPTERS = 1024
"""Adapters remembered per caller; the ingress only routes configured ones."""
EVICT_TO = 0.9
"""After an eviction a replica holds this fraction of its limit, so that
evictions come in batches rather than on every request."""

REASONS = ("single", "none", "session", "prefix", "adapter", "spill", "new")
"""Why a replica was preferred (``Choice.reason``), for the decision counter."""


@dataclass(frozen=True, slots=True)
class Choice:
    ranks: list[list[str]]
    """Replica ids, most preferred rank first."""
    reason: str
    """One of ``REASONS``."""


class PrefixPolicy:
    """The router's memory of what each replica holds, and its choice."""

    def __init__(
        self, settings: PrefixRouterConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._tree = prefix_tree()
        self._lock = threading.RLock()  # Serve may update replicas from another thread
        self._replicas: set[str] = set()
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._adapters: OrderedDict[str, dict[str, float]] = OrderedDict()

    # -- the replica set ------------------------------------------------------------

    def set_replicas(self, replicas: Iterable[str]) -> None:
        """The replicas now running: new ones start empty, gone ones are forgotten."""
        with self._lock:
            now = set(replicas)
            added, gone = now - self._replicas, self._replicas - now
            self._replicas = now
            if added:
                self._tree.add_tenants(sorted(added), self._clock())
            if gone:
                self._forget(gone)

    def remove(self, replica: str) -> None:
        """A replica died: forget it before Serve's next replica update says so."""
        with self._lock:
            if replica in self._replicas:
                self._replicas.discard(replica)
                self._forget({replica})

    def _forget(self, gone: set[str]) -> None:
        self._tree.remove_tenants(sorted(gone))
        for session in [s for s, r in self._sessions.items() if r in gone]:
            del self._sessions[session]
        for hosts in self._adapters.values():
            for replica in gone & hosts.keys():
                del hosts[replica]

    def held_chars(self, replica: str) -> int:
        """Characters of prompts remembered for ``replica``."""
        return self._tree.tenant_to_char_count.get(replica, 0)

    # -- choosing --------------------------------------------------------------------

    def choose(self, key: RoutingKey | None, loads: Mapping[str, int | None]) -> Choice:
        """Rank the candidate replicas (``loads``: their ongoing requests, None when
        unknown, which counts as idle: it errs towards spreading load)."""
        replicas = list(loads)
        if len(replicas) <= 1:
            return Choice([replicas], "single")
        load = {r: loads[r] or 0 for r in replicas}
        least = min(load.values())
        eligible = [r for r in replicas if load[r] - least <= self.settings.imbalance_threshold]
        if key is None:
            pair = random.sample(eligible, min(2, len(eligible)))
            return Choice(_ranks(pair, replicas), "none")
        with self._lock:
            preferred, reason = self._prefer(key, replicas, set(eligible))
            if not preferred:  # no affinity: load-balance, spreading prefixes on ties
                rank = {r: (load[r], self.held_chars(r)) for r in eligible}
                best = min(rank.values())
                preferred = [r for r in eligible if rank[r] == best]
        return Choice(_ranks(preferred, eligible, replicas), reason)

    def _prefer(
        self, key: RoutingKey, replicas: list[str], eligible: set[str]
    ) -> tuple[list[str], str]:
        """The affinity replicas among ``eligible`` and why; none: a new prefix."""
        if key.session is not None and self._sessions.get(key.session) in eligible:
            return [self._sessions[key.session]], "session"
        spill = False
        matched, holders = self._tree.prefix_match(key.text, replicas)
        if holders and len(matched) - len(key.scope) >= self.settings.min_match_chars:
            near = [r for r in holders if r in eligible]
            if near:
                return near, "prefix"
            spill = True
        if key.adapter is not None:
            recent = self._clock() - ADAPTER_MEMORY_S
            hosts = self._adapters.get(key.adapter, {})
            near = [r for r, seen in hosts.items() if seen >= recent and r in eligible]
            if near:
                return near, "adapter"
        return [], "spill" if spill else "new"

    # -- learning --------------------------------------------------------------------

    def record(self, key: RoutingKey, replica: str) -> None:
        """``replica`` took the request of ``key``: it holds that prompt now."""
        with self._lock:
            if replica not in self._replicas:
                return  # gone meanwhile
            now = self._clock()
            self._tree.insert(key.text, replica, now)
            limit = self.settings.tracked_chars_per_replica
            held = self.held_chars(replica)
            if held > limit:
                self._tree.evict_tenant_by_lru(replica, held - int(limit * EVICT_TO))
            if key.session is not None:
                self._sessions[key.session] = replica
                self._sessions.move_to_end(key.session)
                if len(self._sessions) > MAX_SESSIONS:
                    self._sessions.popitem(last=False)
            if key.adapter is not None:
                self._adapters.setdefault(key.adapter, {})[replica] = now
                self._adapters.move_to_end(key.adapter)
                if len(self._adapters) > MAX_ADAPTERS:
                    self._adapters.popitem(last=False)


def _ranks(*groups: list[str]) -> list[list[str]]:
    """Each replica once, in the first group that has it; empty ranks dropped (Serve
    probes a full replica again in every rank that lists it)."""
    seen: set[str] = set()
    ranks = []
    for group in groups:
        rank = [r for r in group if r not in seen]
        seen.update(rank)
        if rank:
            ranks.append(rank)
    return ranks
