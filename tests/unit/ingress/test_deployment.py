"""The ingress replica's own start-up checks (the whole replica runs in the e2e tests)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llmserve.config import IngressConfig
from llmserve.ingress.deployment import Ingress
from llmserve.ingress.routes import RouteTable

pytestmark = pytest.mark.unit


def _start(config: IngressConfig) -> Ingress:
    """Run the replica's constructor as Serve does (it is async), with nothing to serve."""
    ingress = Ingress.__new__(Ingress)

    async def run() -> None:
        await ingress.__init__(config, RouteTable())  # type: ignore[misc]

    asyncio.run(run())
    return ingress


def test_a_replica_without_keys_on_a_reachable_address_refuses_to_start() -> None:
    """Config validation refuses such a config; a copy made without validation (or a
    deploy path that skipped it) still stops here, before any engine starts."""
    exposed = IngressConfig().model_copy(update={"host": "0.0.0.0"})
    with pytest.raises(ValueError, match="ingress.api_keys: host '0.0.0.0' is not a loopback"):
        _start(exposed)


def test_a_replica_told_to_serve_without_keys_says_so_loudly(caplog) -> None:
    config = IngressConfig.model_validate({"host": "0.0.0.0", "allow_unauthenticated": True})
    with caplog.at_level(logging.WARNING, logger="llmserve"):
        _start(config)
    assert [r.getMessage() for r in caplog.records] == [config.open_warning()]
    assert "WITHOUT API keys on 0.0.0.0:8000" in caplog.records[0].getMessage()


def test_a_loopback_replica_starts_quietly(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="llmserve"):
        ingress = _start(IngressConfig())
    assert ingress.api_keys == []
    assert caplog.records == []
