"""TCP ports: free ones for the listeners a local app starts later (HAProxy's, a test
app's), and who holds the app's own port when it is taken."""

from __future__ import annotations

import errno
import random
import socket

import psutil

from llmserve.compat.ray import haproxy_config_root

# Ports handed out here are bound later (HAProxy starts seconds after Ray), so they
# come from a range that nothing takes by itself meanwhile: below the kernel's
# ephemeral range (where every bind to port 0 lands, Ray's gRPC servers' included),
# above Ray's worker ports (10002-19999), below Serve's direct-ingress ports (30000+).
_PICK_RANGE = range(20000, 30000)


def pick_port(host: str = "0.0.0.0") -> int:
    """A TCP port that is free on ``host`` now and that no port-0 bind can take later."""
    ports = list(_PICK_RANGE)
    random.shuffle(ports)
    for port in ports[:200]:
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PICK_RANGE.start}-{_PICK_RANGE.stop - 1}")


class PortInUse(RuntimeError):
    pass


def check_free(host: str, port: int) -> None:
    """Raise ``PortInUse``, naming the process that listens there, if ``host:port`` is taken.

    Ray starts (and HAProxy fails to bind, "Address already in use") only after
    ~20 s; this says it at once, and who holds the port. SO_REUSEADDR: a port
    whose last connections are still in TIME_WAIT is free to listen on.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(f"port {port} on {host} is in use: {holder(port)}") from None


def holder(port: int) -> str:
    """Who listens on TCP ``port``, as far as this user may see."""
    try:
        listeners = [
            c
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        ]
    except psutil.AccessDenied:  # e.g. macOS without root
        listeners = []
    pids = sorted({c.pid for c in listeners if c.pid is not None})
    if not pids:
        return (
            "by a process this user may not inspect (another user's, or outside this "
            f"container); `sudo ss -ltnp 'sport = :{port}'` names it"
        )
    return "; ".join(_describe(pid) for pid in pids)


def _describe(pid: int) -> str:
    try:
        process = psutil.Process(pid)
        name, cmdline = process.name(), " ".join(process.cmdline())
    except psutil.Error:
        return f"by pid {pid}, which has just ended"
    text = f"by pid {pid} ({name}: {cmdline[:200]})"
    if name == "haproxy" and haproxy_config_root() in cmdline:
        text += (
            ", an HAProxy left by an earlier llmserve run or Ray Serve app that was "
            f"killed; stop it with `kill {pid}`"
        )
    return text
