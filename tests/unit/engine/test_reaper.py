"""Processes registered with the reaper die when the process that registered them does."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import psutil
import pytest

from llmserve.engine import reaper

pytestmark = pytest.mark.unit

# A stand-in replica: starts a long-lived child (its "engine"), registers it, prints
# the child's pid and waits to be killed.
REPLICA = """
import subprocess, sys, time
from llmserve.engine.reaper import child_processes, reap_on_exit
before = child_processes()
engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
reap_on_exit(child_processes() - before)
print(engine.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_registered_child_dies_with_its_parent(sig) -> None:
    replica = subprocess.Popen([sys.executable, "-c", REPLICA], stdout=subprocess.PIPE, text=True)
    try:
        engine = psutil.Process(int(replica.stdout.readline()))
        assert engine.is_running()
        replica.send_signal(sig)
        replica.wait(timeout=30)
        engine.wait(timeout=15)  # raises TimeoutExpired if the engine was orphaned
    finally:
        replica.kill()


def test_an_unregistered_process_is_left_alone() -> None:
    code = REPLICA.replace("reap_on_exit(child_processes() - before)", "reap_on_exit(set())")
    replica = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    engine = psutil.Process(int(replica.stdout.readline()))
    try:
        replica.kill()
        replica.wait(timeout=30)
        time.sleep(1)
        assert engine.is_running()
    finally:
        engine.kill()


# A stand-in `llmserve run`: registers its tree, then starts a stand-in Ray worker in a
# session of its own (as raylet's workers are), which starts a stand-in HAProxy each
# time it gets SIGUSR1 (as Serve's HAProxyManager does on every reload) and outlives
# its parent for a few seconds, as a Ray worker whose raylet died does.
WORKER = """
import signal, subprocess, sys, time
def spawn(*_):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, flush=True)
signal.signal(signal.SIGUSR1, spawn)
spawn()
parent = int(sys.argv[1])
while True:
    time.sleep(0.05)
    try:
        import os; os.kill(parent, 0)
    except ProcessLookupError:
        time.sleep(2)
        sys.exit(0)
"""
CLI = """
import os, subprocess, sys, time
from llmserve.engine.reaper import reap_descendants_on_exit
reap_descendants_on_exit()
worker = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], str(os.getpid())], start_new_session=True
)
print(worker.pid, flush=True)
time.sleep(600)
"""


def _pids(stream, n: int) -> list[psutil.Process]:
    return [psutil.Process(int(stream.readline())) for _ in range(n)]


def test_a_tree_dies_with_its_root_also_what_started_after_the_last_look() -> None:
    """Processes in their own session, and one started by a surviving parent just before
    the root died (after the reaper last looked), are all stopped."""
    cli = subprocess.Popen([sys.executable, "-c", CLI, WORKER], stdout=subprocess.PIPE, text=True)
    started: list[psutil.Process] = []
    try:
        started += _pids(cli.stdout, 2)
        time.sleep(reaper.POLL_S + 1)  # the reaper has seen both
        started[0].send_signal(signal.SIGUSR1)
        started += _pids(cli.stdout, 1)  # a "reload", a moment before the kill
        cli.kill()
        cli.wait(timeout=30)
        _, alive = psutil.wait_procs(started, timeout=15)
        assert not alive, alive
    finally:
        cli.kill()
        for process in started:
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_a_process_with_the_argument_dies_with_the_registrant(tmp_path) -> None:
    """However unrelated: Serve's HAProxy is matched by its config path."""
    marker = str(tmp_path / "haproxy.cfg")
    sleep = [sys.executable, "-c", "import time, sys; time.sleep(600)"]
    matching = subprocess.Popen([*sleep, "-f", marker], start_new_session=True)
    other = subprocess.Popen([*sleep, "-f", marker + ".other"], start_new_session=True)
    code = (
        "import sys, time\n"
        "from llmserve.engine.reaper import reap_by_arg_on_exit\n"
        f"reap_by_arg_on_exit({marker!r})\n"
        "print('registered', flush=True)\n"
        "time.sleep(600)\n"
    )
    registrant = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert registrant.stdout.readline().strip() == "registered"
        registrant.kill()
        registrant.wait(timeout=30)
        matching.wait(timeout=15)
        time.sleep(1)
        assert other.poll() is None
    finally:
        for p in (registrant, matching, other):
            p.kill()
