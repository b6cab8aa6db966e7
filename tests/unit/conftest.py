"""Unit tests run without a Ray connection, whatever an earlier test module left behind."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def no_ray_connection():
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    yield
