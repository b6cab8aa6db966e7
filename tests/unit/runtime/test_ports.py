"""runtime.ports: ports picked now for listeners that bind them later."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from llmserve.runtime.ports import pick_port

pytestmark = pytest.mark.unit


def test_picked_ports_are_free_and_out_of_reach_of_port_zero_binds() -> None:
    """HAProxy binds the picked stats/metrics ports seconds later; a port from the kernel's
    ephemeral range could be taken meanwhile by any bind to port 0 (Ray's own servers)."""
    from ray.serve._private.constants import RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT

    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(20):
        port = pick_port()
        assert not low <= port <= high
        assert not 10002 <= port <= 19999, "`ray start`'s default worker ports"
        assert port < RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))  # free right now
