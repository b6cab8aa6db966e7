"""The default config, started exactly as `make run` starts it: `llmserve run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIGS, ROOT
from tests.helpers import descendants, free_port, in_session, stop_leftovers

STARTUP_TIMEOUT_S = 900


@pytest.fixture(scope="package")
def default_app(tmp_path_factory):
    """Base URL of `llmserve run configs/default.yaml` in a subprocess."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("default-app") / "llmserve.log"
    llmserve = Path(sys.executable).parent / "llmserve"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(llmserve), "run", str(CONFIGS / "default.yaml"), "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ),
        )
    base_url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while "is serving" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() - started > STARTUP_TIMEOUT_S:
                pytest.fail(f"llmserve run did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(2)
        assert httpx.get(f"{base_url}/health").status_code == 200
        yield base_url
    finally:
        # Ctrl-C, as a user would; it must shut Serve and Ray down cleanly.
        app_processes = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("llmserve run did not exit within 120 s of Ctrl-C")
        finally:
            # What outlives the CLI is reaped by it within ~10 s (tests/faults checks
            # that); whatever is still there after that must not answer later tests.
            stop_leftovers(app_processes + in_session(proc.pid), "llmserve run (default app)")
