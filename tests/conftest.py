"""Shared test setup. Tests are marked by folder: unit, integration, e2e, load."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# Small engines: every vLLM engine in the suite reserves 1 GiB of KV cache.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in ("unit", "integration", "e2e", "load", "faults"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without interpreter finalization once the session has reported.

    CI once saw pytest print its summary and then die with SIGSEGV while Python tore down
    modules with Ray's core-worker and torch threads still alive; ``make`` then reports a
    crash instead of the result. The result is known at this point, so exit with it.
    """
    import ray

    if ray.is_initialized():
        ray.shutdown()
    status = getattr(config, "_llmserve_exitstatus", None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def pytest_sessionfinish(session, exitstatus):
    session.config._llmserve_exitstatus = int(exitstatus)
