"""Free TCP ports for the listeners a local app starts later (HAProxy's, a test app's)."""

from __future__ import annotations

import random
import socket

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
