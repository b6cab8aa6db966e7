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

``llmserve run`` uses the same reaper for the local Ray it started: when it
stops, everything left of that Ray (agents, workers, engines) is stopped
once the CLI process is gone.
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
    global _reaper
    if not processes:
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
        lines = "".join(f"{pid} {started!r}\n" for pid, started in sorted(processes))
        assert _reaper.stdin is not None  # Popen(stdin=PIPE)
        _reaper.stdin.write(lines)
        _reaper.stdin.flush()


def _stop(watched: dict[int, float]) -> None:
    alive = []
    for pid, started in watched.items():
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            if abs(process.create_time() - started) < 0.01:
                alive.append(process)
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
    watched: dict[int, float] = {}
    for line in sys.stdin:  # ends when the replica's end of the pipe closes
        pid, started = line.split()
        watched[int(pid)] = float(started)
    # Give a replica that is exiting cleanly the time to stop its engine itself.
    time.sleep(0.5)
    _stop(watched)


if __name__ == "__main__":
    main()
