"""A raw ASGI HTTP scope, for tests that drive the ingress app without an HTTP client."""

from __future__ import annotations

from typing import Any


def http_scope(
    path: str, headers: list[tuple[bytes, bytes]], method: str = "POST"
) -> dict[str, Any]:
    """A request (POST unless said) to ``path`` from 127.0.0.1 with ``headers``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 8000),
    }
