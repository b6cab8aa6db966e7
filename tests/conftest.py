"""Shared test setup. Tests are marked by folder: unit, integration, e2e, load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# Small engines: every vLLM engine in the suite reserves 1 GiB of KV cache.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in ("unit", "integration", "e2e", "load"):
            item.add_marker(getattr(pytest.mark, parts[0]))
