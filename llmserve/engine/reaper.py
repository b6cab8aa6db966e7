"""Engine processes die with the replica that started them, even on SIGKILL.

vLLM starts its engine core (and, for tensor parallelism on CPU, its
workers) as child processes. They stop when the replica shuts down cleanly,
but a replica killed outright (SIGKILL, the OOM killer, a node agent) leaves
them running as orphans, holding memory (and on a GPU host, GPU memory).

A replica therefore starts one small reaper process. The replica tells it
the engine processes it started (one line per process: pid and start time)
and keeps the reaper's stdin open. When the replica dies, for any reason,
the kernel closes that pipe; the reaper sees end-of-file and stops every
process it was told about that is still running (SIGTERM, then SIGKILL).
The start time guards against a recycled pid.

``llmserve run`` uses the same reaper for the local Ray it started, so that
nothing of it outlives the CLI, however the CLI ends (a second Ctrl-C, a
supervisor's SIGKILL of the process group). Most of Ray runs in the CLI's
process group, but every Ray worker (Serve's replicas, its HAProxyManager)
has a process group of its own, and HAProxy, the HAProxyManager's child,
does not stop when its parent dies: once orphaned it keeps the app's port
and answers every request with a 500. Processes that appear while the app
runs (replicas restarted, HAProxy respawned on every reload) cannot be
listed up front, so the reaper is also told:

- ``tree``: a process whose descendants it looks up every ``POLL_S`` while
  that process lives, and once more (below the ones still alive) when the
  pipe closes: a parent dying with the CLI leaves its children to init;
- ``arg``: a command-line argument (HAProxy's per-node config path) that
  marks a process to stop, however recently it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import psutil

GRACE_S = 5.0
POLL_S = 2.0

_lock = threading.Lock()
_reaper: subprocess.Popen | None = None


def child_processes() -> set[tuple[int, float]]:
    """This process's descendants as (pid, start time)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found.add((child.pid, child.create_time()))
    return found


def reap_on_exit(processes: set[tuple[int, float]]) -> None:
    """Have these processes stopped when this process ends, however it ends."""
    _tell([f"{pid} {started!r}" for pid, started in sorted(processes)])


def reap_descendants_on_exit() -> None:
    """Have this process's descendants stopped when it ends, also those it starts later."""
    me = psutil.Process()
    _tell([f"tree {me.pid} {me.create_time()!r}"])


def reap_by_arg_on_exit(arg: str) -> None:
    """Have every process with ``arg`` as one of its command-line arguments (of this
    user's that the reaper may signal) stopped when this process ends."""
    if not arg or "\n" in arg:
        raise ValueError(f"not a command-line argument the reaper can match: {arg!r}")
    _tell([f"arg {arg}"])


def _tell(lines: list[str]) -> None:
    global _reaper
    if not lines:
        return
    with _lock:
        if _reaper is None or _reaper.poll() is not None:
            _reaper = subprocess.Popen(
                [sys.executable, "-m", "llmserve.engine.reaper", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                # Its own session: a signal to the replica's process group
                # (a terminal's Ctrl-C) must not stop the reaper first.
                start_new_session=True,
                text=True,
            )
        assert _reaper.stdin is not None  # Popen(stdin=PIPE)
        _reaper.stdin.write("".join(f"{line}\n" for line in lines))
        _reaper.stdin.flush()


class _Watch:
    """What the reaper will stop: processes told, found under trees, or matched by argument."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processes: dict[int, float] = {}
        self.trees: dict[int, float] = {}
        self.args: set[str] = set()

    def add(self, line: str) -> None:
        kind, _, rest = line.rstrip("\n").partition(" ")
        with self.lock:
            if kind == "arg":
                self.args.add(rest)
            elif kind == "tree":
                pid, started = rest.split()
                self.trees[int(pid)] = float(started)
            else:
                self.processes[int(kind)] = float(rest)

    def poll(self) -> None:
        """Record the trees' current descendants, forgetting processes that ended."""
        with self.lock:
            roots = [p for p in map(_same, self.trees.items()) if p is not None]
            known = dict(self.processes)
        found = {pid: started for root in roots for pid, started in _descendants(root)}
        alive = {pid: started for pid, started in known.items() if _same((pid, started))}
        with self.lock:
            self.processes = {**self.processes, **found}
            for pid in known.keys() - alive.keys():
                self.processes.pop(pid, None)

    def final(self) -> dict[int, float]:
        """Everything to stop now that the pipe closed: what was recorded, what the ones
        still alive started since the last poll, and what matches an argument."""
        with self.lock:
            recorded = dict(self.processes)
            args = set(self.args)
        parents = [p for p in map(_same, recorded.items()) if p is not None]
        for parent in parents:
            recorded.update(_descendants(parent))
        if args:
            for process in psutil.process_iter(["cmdline"]):
                if args & set(process.info["cmdline"] or ()):
                    with contextlib.suppress(psutil.Error):
                        recorded[process.pid] = process.create_time()
        recorded.pop(os.getpid(), None)
        return recorded

    def poll_forever(self) -> None:
        while True:
            time.sleep(POLL_S)
            self.poll()


def _same(entry: tuple[int, float]) -> psutil.Process | None:
    """The process with this pid, if it is still the one that started at that time."""
    pid, started = entry
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if abs(process.create_time() - started) < 0.01:
            return process
    return None


def _descendants(process: psutil.Process) -> list[tuple[int, float]]:
    found = []
    with contextlib.suppress(psutil.Error):
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                found.append((child.pid, child.create_time()))
    return [entry for entry in found if entry[0] != os.getpid()]


def _stop(watched: dict[int, float]) -> None:
    alive = [p for p in map(_same, watched.items()) if p is not None]
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGTERM)
    _, still = psutil.wait_procs(alive, timeout=GRACE_S)
    for process in still:
        with contextlib.suppress(psutil.Error):
            process.kill()


def main() -> None:
    # Ignore the signals a terminal or a process-group kill would send, so
    # that the reaper outlives the replica long enough to do its job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch = _Watch()
    threading.Thread(target=watch.poll_forever, daemon=True).start()
    for line in sys.stdin:  # ends when the replica's end of the pipe closes
        watch.add(line)
    # At once: a parent that outlived the replica (a Ray worker whose raylet died with the
    # CLI) may exit any moment, leaving its children to init, out of reach.
    targets = watch.final()
    # Give a replica that is exiting cleanly the time to stop its engine itself.
    time.sleep(0.5)
    _stop(targets)


if __name__ == "__main__":
    main()
