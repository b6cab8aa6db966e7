"""The prefix-aware router's choice: affinity while loads are close, load otherwise."""

from __future__ import annotations

import pytest

from llmserve.config.routing import PrefixRouterConfig
from llmserve.servers.protocol import NO_META, Endpoint
from llmserve.servers.routing.key import routing_key
from llmserve.servers.routing.policy import ADAPTER_MEMORY_S, MAX_SESSIONS, PrefixPolicy

pytestmark = pytest.mark.unit

A, B, C = "replica-a", "replica-b", "replica-c"
IDLE = {A: 0, B: 0}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001  # every event a distinct time, as the tree's LRU wants
        return self.now


def policy(replicas=(A, B), clock=None, **settings) -> PrefixPolicy:
    p = PrefixPolicy(PrefixRouterConfig(**settings), clock or Clock())
    p.set_replicas(replicas)
    return p


def doc(group: int) -> str:
    return f"Document {group}: " + f"the text of document {group}. " * 40


def key(group: int, question: str = "Q?", *, salt=None, model="m", user=None, sessions=False):
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": doc(group)},
            {"role": "user", "content": question},
        ],
    }
    if salt is not None:
        body["cache_salt"] = salt
    if user is not None:
        body["user"] = user
    return routing_key(
        Endpoint.CHAT, body, NO_META, base_model="m", max_chars=16384, sessions=sessions
    )


def route(p: PrefixPolicy, k, loads=IDLE) -> str:
    """What Serve does with a choice: the least busy replica of the first rank."""
    choice = p.choose(k, loads)
    first = choice.ranks[0]
    replica = min(first, key=lambda r: (loads.get(r) or 0, first.index(r)))
    p.record(k, replica)
    return replica


def test_a_shared_prefix_goes_back_to_the_replica_that_has_it() -> None:
    p = policy()
    home = route(p, key(1, "first question"))
    for i in range(5):
        choice = p.choose(key(1, f"question {i}"), IDLE)
        assert (choice.ranks[0], choice.reason) == ([home], "prefix")
        p.record(key(1, f"question {i}"), home)


def test_new_prefixes_spread_over_the_replicas() -> None:
    p = policy()
    homes = [route(p, key(g)) for g in range(4)]
    assert sorted(homes) == [A, A, B, B]


def test_an_imbalanced_replica_gets_no_affinity_traffic() -> None:
    p = policy(imbalance_threshold=2)
    home = route(p, key(1))
    other = B if home == A else A
    busy = {home: 3, other: 0}
    choice = p.choose(key(1, "another question"), busy)
    assert choice.reason == "spill"
    assert choice.ranks == [[other], [home]]  # the busy one only as a last resort
    # within the threshold, affinity holds
    close = {home: 2, other: 0}
    assert p.choose(key(1, "another question"), close).ranks[0] == [home]


def test_misses_do_not_pile_onto_a_busy_replica() -> None:
    """The known failure of cache-aware routers: every miss to one busy replica."""
    p = policy(imbalance_threshold=1)
    p.record(key(1), B)
    p.record(key(2), B)
    # A holds the fewest characters, so new prefixes go there while loads are close
    assert p.choose(key(10), IDLE).ranks[0] == [A]
    busy = {A: 5, B: 0}
    for g in range(10, 20):
        assert p.choose(key(g), busy).ranks[0] == [B]


def test_a_miss_goes_where_it_waits_least_whatever_the_replicas_hold() -> None:
    p = policy(imbalance_threshold=10)
    p.record(key(1), A)  # A holds more, but B is busier
    choice = p.choose(key(2), {A: 0, B: 1})
    assert (choice.ranks[0], choice.reason) == ([A], "new")


def test_a_hot_prefix_spills_and_then_lives_on_both_replicas() -> None:
    p = policy(imbalance_threshold=1)
    home = route(p, key(1))
    other = B if home == A else A
    spilled = route(p, key(1, "x"), {home: 4, other: 0})
    assert spilled == other
    choice = p.choose(key(1, "y"), IDLE)
    assert choice.reason == "prefix" and sorted(choice.ranks[0]) == [A, B]


def test_a_short_shared_prefix_is_load_balanced_not_pinned() -> None:
    p = policy(min_match_chars=256)
    short = lambda q: routing_key(  # noqa: E731
        Endpoint.CHAT,
        {"model": "m", "messages": [{"role": "user", "content": q}]},
        NO_META,
        base_model="m",
        max_chars=16384,
    )
    route(p, short("Hello there, how are you today?"))
    assert p.choose(short("Hello there, how is it going?"), IDLE).reason == "new"


def test_two_tenants_never_share_an_affinity() -> None:
    p = policy()
    home = route(p, key(1, salt="tenant-a"))
    choice = p.choose(key(1, "same doc", salt="tenant-b"), IDLE)
    assert choice.reason == "new"
    # the second tenant's first request goes to the replica holding less
    assert choice.ranks[0] == [B if home == A else A]
    assert p.choose(key(1, "again", salt="tenant-a"), IDLE).ranks[0] == [home]


def test_a_dead_replica_is_forgotten_and_its_prefixes_move() -> None:
    p = policy()
    home = route(p, key(1))
    other = B if home == A else A
    p.remove(home)
    assert p.held_chars(home) == 0
    choice = p.choose(key(1, "after the death"), {other: 0})
    assert choice.ranks == [[other]]
    # it comes back as a new replica: empty, so it takes the next new prefix
    p.set_replicas([A, B])
    route(p, key(1, "x"), {other: 0, home: 0})
    assert p.choose(key(2), IDLE).ranks[0] == [home]


def test_a_replica_added_later_takes_new_prefixes_while_old_ones_stay() -> None:
    p = policy()
    homes = {g: route(p, key(g)) for g in range(4)}
    p.set_replicas([A, B, C])
    loads = {A: 0, B: 0, C: 0}
    assert p.choose(key(9), loads).ranks[0] == [C]
    for g, home in homes.items():
        assert p.choose(key(g, "later"), loads).ranks[0] == [home]


def test_replicas_gone_from_an_update_are_forgotten() -> None:
    p = policy(replicas=(A, B, C))
    for g in range(6):
        route(p, key(g), {A: 0, B: 0, C: 0})
    p.set_replicas([A])
    assert p.held_chars(B) == p.held_chars(C) == 0


def test_memory_is_bounded_and_the_least_recent_prefixes_go_first() -> None:
    limit = 20_000
    p = policy(tracked_chars_per_replica=limit)
    for g in range(100):
        p.record(key(g), A)
        assert p.held_chars(A) <= limit
    assert p.choose(key(99, "recent"), IDLE).reason == "prefix"
    assert p.choose(key(0, "oldest"), IDLE).reason == "new"


def test_a_session_stays_on_its_replica_while_loads_allow() -> None:
    p = policy(session_affinity=True, imbalance_threshold=2)
    first = key(1, user="alice", sessions=True)
    home = route(p, first)
    other_doc = key(7, "unrelated", user="alice", sessions=True)
    assert p.choose(other_doc, IDLE).reason == "session"
    assert p.choose(other_doc, IDLE).ranks[0] == [home]
    busy = {home: 5, B if home == A else A: 0}
    assert p.choose(other_doc, busy).ranks[0] != [home]


def test_sessions_are_bounded() -> None:
    p = policy(session_affinity=True)
    for i in range(MAX_SESSIONS + 10):
        p.record(key(1, user=f"user-{i}", sessions=True), A)
    assert len(p._sessions) == MAX_SESSIONS
    assert "u:user-0" not in p._sessions


def test_an_adapter_stays_where_it_was_served_recently() -> None:
    clock = Clock()
    p = policy(clock=clock)
    home = route(p, key(1, model="m-lora"))
    choice = p.choose(key(2, model="m-lora"), IDLE)  # another document: no prefix
    assert (choice.ranks[0], choice.reason) == ([home], "adapter")
    # the base model has no such pull
    route(p, key(3))
    assert p.choose(key(4), IDLE).reason == "new"
    clock.now += ADAPTER_MEMORY_S + 1
    assert p.choose(key(2, model="m-lora"), IDLE).reason == "new"


def test_no_key_is_plain_load_balancing_and_one_replica_no_choice() -> None:
    p = policy(imbalance_threshold=0)
    choice = p.choose(None, {A: 3, B: 0})
    assert choice.reason == "none" and choice.ranks[0] == [B]
    assert p.choose(key(1), {A: 0}).ranks == [[A]]


def test_an_unknown_load_counts_as_idle() -> None:
    p = policy(imbalance_threshold=1)
    home = route(p, key(1))
    other = B if home == A else A
    choice = p.choose(key(1, "q"), {home: 4, other: None})
    assert choice.reason == "spill" and choice.ranks[0] == [other]
