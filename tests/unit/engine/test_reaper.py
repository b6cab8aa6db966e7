"""Processes registered with the reaper die when the process that registered them does."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

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
