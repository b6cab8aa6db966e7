"""The prefix-aware router inside Serve's own routing loop, with stand-in replicas.

Serve's ``RequestRouter`` base class does the rest of the work (queue-length
cache, probing, full replicas, backoff); these tests drive it through its
real entry point, ``_choose_replica_for_request``, as a handle does.
"""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

import pytest
from ray.serve.request_router import PendingRequest, ReplicaID

from llmserve.config.routing import PrefixRouterConfig
from llmserve.observability import metrics
from llmserve.servers.protocol import NO_META, Endpoint
from llmserve.servers.routing.router import PrefixAwareRouter

pytestmark = pytest.mark.unit

DEPLOYMENT = "llm-m"
_ids = itertools.count()


class Replica:
    """What the router needs of a ``RunningReplica``: an id, a limit, a queue length."""

    def __init__(self, name: str, queue: int = 0, max_ongoing: int = 8) -> None:
        from ray.serve._private.common import DeploymentID  # a test stand-in only

        self.replica_id = ReplicaID(name, DeploymentID(name=DEPLOYMENT, app_name="llmserve"))
        self.queue = queue
        self.max_ongoing_requests = max_ongoing
        self.probes = 0

    async def get_queue_len(self, *, deadline_s: float) -> int:
        self.probes += 1
        return self.queue


def make_router(**settings) -> PrefixAwareRouter:
    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    router = PrefixAwareRouter(
        deployment_id=DeploymentID(name=DEPLOYMENT, app_name="llmserve"),
        handle_source=DeploymentHandleSource.UNKNOWN,
        use_replica_queue_len_cache=True,
    )
    router.initialize_state(base_model="m", **PrefixRouterConfig(**settings).model_dump())
    return router


def request(document: int, question: str, endpoint=Endpoint.CHAT) -> PendingRequest:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": f"Document {document}. " * 100},
            {"role": "user", "content": question},
        ],
    }
    n = next(_ids)
    metadata = SimpleNamespace(
        request_id=str(n), internal_request_id=str(n), multiplexed_model_id=""
    )
    return PendingRequest(args=[endpoint, body, NO_META], kwargs={}, metadata=metadata)


async def send(router: PrefixAwareRouter, pr: PendingRequest) -> Replica:
    """Route like a handle does: choose, then (accepted) tell the router."""
    replica = await asyncio.wait_for(router._choose_replica_for_request(pr), 5)
    replica.queue += 1
    router.on_send_request(replica.replica_id)
    router.on_request_routed(pr, replica.replica_id, None)
    return replica


def finish(router: PrefixAwareRouter, replica: Replica) -> None:
    replica.queue -= 1
    router.decrement_queue_len_cache(replica.replica_id)


def decisions(reason: str) -> float:
    return metrics.ROUTING.labels(DEPLOYMENT, reason)._value.get()


def test_the_same_prefix_lands_on_the_same_replica_through_serves_loop() -> None:
    async def run() -> None:
        router = make_router()
        a, b = Replica("a"), Replica("b")
        router.update_replicas([a, b])
        before = decisions("prefix")
        first = await send(router, request(1, "What is it?"))
        finish(router, first)
        for i in range(4):
            again = await send(router, request(1, f"Question {i}?"))
            finish(router, again)
            assert again is first
        assert decisions("prefix") - before == 4
        other = await send(router, request(2, "What is it?"))
        assert other is not first  # a new document goes to the replica holding less

    asyncio.run(run())


def test_a_busy_home_replica_loses_its_affinity_then_gets_it_back() -> None:
    async def run() -> None:
        router = make_router(imbalance_threshold=2)
        a, b = Replica("a"), Replica("b")
        router.update_replicas([a, b])
        home = await send(router, request(1, "q0"))
        # two more of the same prefix, none finished: the gap grows to 3
        held = [await send(router, request(1, f"q{i}")) for i in range(1, 3)]
        assert held == [home, home]
        spilled = await send(router, request(1, "q3"))
        assert spilled is not home
        for replica in [home, *held, spilled]:
            finish(router, replica)
        assert await send(router, request(1, "q5")) in (home, spilled)

    asyncio.run(run())


def test_a_full_replica_never_blocks_a_request() -> None:
    async def run() -> None:
        router = make_router(imbalance_threshold=100)
        a, b = Replica("a", max_ongoing=1), Replica("b", max_ongoing=1)
        router.update_replicas([a, b])
        home = await send(router, request(1, "q0"))  # now full
        assert await send(router, request(1, "q1")) is not home

    asyncio.run(run())


def test_a_dead_replica_is_dropped_and_its_prefixes_move() -> None:
    async def run() -> None:
        router = make_router()
        a, b = Replica("a"), Replica("b")
        router.update_replicas([a, b])
        home = await send(router, request(1, "q0"))
        finish(router, home)
        router.on_replica_actor_died(home.replica_id)
        survivor = await send(router, request(1, "q1"))
        assert survivor is not home
        finish(router, survivor)
        # Serve replaces it: the newcomer starts empty and takes the next new document
        newcomer = Replica("c")
        router.update_replicas([survivor, newcomer])
        assert await send(router, request(1, "q2")) is survivor
        assert await send(router, request(3, "q0")) is newcomer

    asyncio.run(run())


def test_tokenize_is_load_balanced_without_a_key() -> None:
    async def run() -> None:
        router = make_router()
        a, b = Replica("a"), Replica("b")
        router.update_replicas([a, b])
        before = decisions("none")
        await send(router, request(1, "q", endpoint=Endpoint.TOKENIZE))
        assert decisions("none") - before == 1
        assert router._policy.held_chars(a.replica_id.to_full_id_str()) == 0
        assert router._policy.held_chars(b.replica_id.to_full_id_str()) == 0

    asyncio.run(run())


def test_every_choice_lets_serve_back_off_when_all_replicas_are_full() -> None:
    async def run() -> None:
        router = make_router()
        a = Replica("a", queue=1, max_ongoing=1)
        b = Replica("b", queue=1, max_ongoing=1)
        router.update_replicas([a, b])
        pr = request(1, "q")
        task = asyncio.ensure_future(router._choose_replica_for_request(pr))
        await asyncio.sleep(0.3)
        # Without backing off, Serve's loop would re-ask (and re-probe) back to back:
        # thousands of probes in 0.3 s.
        assert not task.done() and a.probes + b.probes < 50
        assert pr.routing_context.should_backoff
        b.queue = 0
        assert await asyncio.wait_for(task, 5) is b

    asyncio.run(run())


def test_a_key_that_fails_to_build_is_load_balanced_not_raised(monkeypatch) -> None:
    import llmserve.servers.routing.router as module

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(module, "routing_key", broken)

    async def run() -> None:
        router = make_router()
        router.update_replicas([Replica("a"), Replica("b")])
        assert await send(router, request(1, "q")) is not None

    asyncio.run(run())


def test_a_simultaneous_burst_of_one_prefix_spills_before_any_request_is_sent() -> None:
    """Serve's routing task chooses every pending request of a burst before the first
    caller resumes to send its own and bump the queue-length cache: the router counts
    its own choices meanwhile, so the burst does not all land on the prefix's replica."""

    async def run() -> None:
        router = make_router(imbalance_threshold=2)
        a, b = Replica("a"), Replica("b")
        router.update_replicas([a, b])
        home = await send(router, request(9, "First question?"))
        finish(router, home)
        burst = [request(9, f"Question {i}?") for i in range(10)]
        chosen = await asyncio.gather(
            *(asyncio.wait_for(router._choose_replica_for_request(pr), 5) for pr in burst)
        )
        on_home = sum(r is home for r in chosen)
        assert 3 <= on_home <= 7, on_home
        for pr, replica in zip(burst, chosen, strict=True):
            router.on_send_request(replica.replica_id)
            router.on_request_routed(pr, replica.replica_id, None)
        # once sent, the cache holds them and the router's own count is spent
        assert router._unsent == {}

    asyncio.run(run())
