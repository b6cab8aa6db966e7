"""The Host allow-list: which names the ingress answers, against DNS rebinding.

A web page on an attacker's site can make its own name resolve to 127.0.0.1
(DNS rebinding) and then call a server on the visitor's machine as if it were
its own origin, reading the answers. The browser still sends the attacker's
name as ``Host``, so answering only the names the server is meant to be
reached by stops it. Ports are not compared: the names are what matter.
"""

from __future__ import annotations

from llmserve.config.ingress import normalize_host


def host_name(header: str) -> str:
    """The name in a ``Host`` header value, without its port: ``[::1]:8000`` -> ``::1``."""
    value = header.strip()
    if value.startswith("["):  # an IPv6 literal, with or without a port
        end = value.find("]")
        value = value[: end + 1] if end > 0 else value
    elif value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.partition(":")[0]
    return normalize_host(value)


class HostAllowList:
    """``IngressConfig.host_allow_list()``: exact names, ``*.domain`` for the subdomains
    of a domain, ``*`` (or None) for any host."""

    def __init__(self, names: list[str] | None):
        self.any = names is None or "*" in names
        names = names or []
        self.exact = frozenset(n for n in names if not n.startswith("*."))
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*."))  # ".domain"

    def allows(self, header: bytes | None) -> bool:
        """Whether a request with this ``Host`` header (None: none sent) is answered.

        A request with no Host at all is answered: only HTTP/1.0 clients omit it
        (HAProxy's default health check does), and a browser never does.
        """
        if self.any or header is None:
            return True
        name = host_name(header.decode("latin-1"))
        return name in self.exact or (bool(self.suffixes) and name.endswith(self.suffixes))
