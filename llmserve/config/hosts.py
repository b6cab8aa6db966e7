"""Host names and addresses as the ingress config checks them."""

from __future__ import annotations

import ipaddress
import re

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""The Host names a loopback-bound ingress answers by default (``[::1]`` is ``::1``)."""


_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


def normalize_host(value: str) -> str:
    """A Host name as the ingress compares it: lower case, no IPv6 brackets, no final dot."""
    value = value.strip().lower()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    return value.rstrip(".") if value not in ("", ".") else value


def check_allowed_host(value: str) -> str:
    name = normalize_host(value)
    if not name:
        raise ValueError("a host name must not be empty")
    if "/" in name:
        raise ValueError(f"{value!r}: a host name, not a URL (e.g. api.example.com)")
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise ValueError(
                f"{value!r}: a host name with no port (every port is accepted)"
            ) from None
        return name
    if name == "*":
        return name
    if not _HOST_NAME.match(name.removeprefix("*.")):
        raise ValueError(
            f"{value!r}: not a host name, an IP address, '*.domain' (its subdomains) or '*'"
        )
    return name


def is_loopback(host: str) -> bool:
    """Whether an address to listen on is a loopback one (reachable from this machine only)."""
    name = normalize_host(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
