"""One small app, started as a user starts it (`llmserve run`), for the fault suite.

- ``tiny``: the tiny model fused into the ingress (one ingress replica);
- ``pair``: the same model as its own deployment with 2 replicas.

The tests break it in order (engine kills, a replica SIGKILL) and the last
one stops it with SIGTERM, so the whole suite pays for one start.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from tests.conftest import ROOT
from tests.helpers import descendants, free_port

STARTUP_TIMEOUT_S = 600
RECOVERY_LIMIT_S = 240
GRACEFUL_S = 20
MODEL = {
    "source": "builtin:tiny-llama",
    "device": "cpu",
    "engine_kwargs": {"dtype": "float32", "max_model_len": 512, "enforce_eager": True},
    "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"},
}


def base_config(port: int) -> dict:
    return {
        "ingress": {"port": port, "fused_model": "tiny", "request_timeout_s": 120},
        "models": [
            {
                "id": "tiny",
                **copy.deepcopy(MODEL),
                "deployment": {"graceful_shutdown_timeout_s": GRACEFUL_S},
            },
            {"id": "pair", **copy.deepcopy(MODEL), "deployment": {"num_replicas": 2}},
        ],
    }


@dataclass
class FaultApp:
    url: str
    proc: subprocess.Popen
    log: Path
    config: dict

    @property
    def gcs_address(self) -> str:
        """The app's Ray cluster, for `llmserve deploy --address`."""
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                for arg in p.cmdline():
                    if arg.startswith("--gcs-address="):
                        return arg.split("=", 1)[1]
        raise AssertionError("no raylet with --gcs-address in the app's process tree")

    def wait_whole(self, replicas: dict[str, int]) -> None:
        """Until each deployment has that many replicas with an engine, and /health is 200."""
        deadline = time.monotonic() + RECOVERY_LIMIT_S
        while not (
            all(
                len(rs := self.replicas(name)) == n and all(engine_cores(r) for r in rs)
                for name, n in replicas.items()
            )
            and healthy(self.url)
        ):
            assert time.monotonic() < deadline, "the app did not become whole again"
            time.sleep(1)

    def processes(self) -> list[psutil.Process]:
        return descendants(self.proc.pid)

    def replicas(self, deployment: str) -> list[psutil.Process]:
        """Serve replica processes of ``deployment`` (by Ray's process title)."""
        found = []
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                if f"ServeReplica:llmserve:{deployment}" in " ".join(p.cmdline()):
                    found.append(p)
        return found


def engine_cores(replica: psutil.Process) -> list[psutil.Process]:
    found = []
    with contextlib.suppress(psutil.Error):
        for p in replica.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name():
                    found.append(p)
    return found


def start_app(tmp: Path, config: dict) -> FaultApp:
    """`llmserve run` of ``config`` in a session of its own, once it says it is serving."""
    (tmp / "app.yaml").write_text(yaml.safe_dump(config))
    log_path = tmp / "llmserve.log"
    llmserve = Path(sys.executable).parent / "llmserve"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(llmserve), "run", str(tmp / "app.yaml")],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = FaultApp(f"http://127.0.0.1:{config['ingress']['port']}", proc, log_path, config)
    started = time.monotonic()
    while "is serving" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() - started > STARTUP_TIMEOUT_S:
            stop_app(app, app.processes())
            pytest.fail(f"llmserve run did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(2)
    return app


def stop_app(app: FaultApp, survivors: list[psutil.Process]) -> None:
    """SIGINT, SIGKILL after 120 s; then kill whatever of ``survivors`` is left."""
    if app.proc.poll() is None:
        app.proc.send_signal(signal.SIGINT)
        try:
            app.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(app.proc.pid, signal.SIGKILL)
    for p in survivors:  # never leave engines behind for the rest of the suite
        with contextlib.suppress(psutil.Error):
            p.kill()


@pytest.fixture(scope="package")
def fault_app(tmp_path_factory) -> Iterator[FaultApp]:
    app = start_app(tmp_path_factory.mktemp("faults"), base_config(free_port()))
    try:
        yield app
    finally:
        stop_app(app, app.processes())


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
