"""``build_engine_args``: an engine config -> vLLM's ``AsyncEngineArgs``.

Sources are fake local paths, so no built-in model is prepared and nothing
is loaded: building the args only records them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmserve.config import ModelConfig, load_config
from llmserve.engine.args import (
    build_engine_args,
    executor_backend,
    prepare_process_env,
    resolve_device,
)
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit

FAKE_SOURCE = "/nonexistent/models/fake-llm"


def _cfg(**kwargs) -> ModelConfig:
    kwargs.setdefault("source", FAKE_SOURCE)
    return ModelConfig(id=kwargs.pop("id", "fake"), **kwargs)


def test_source_and_served_name() -> None:
    args = build_engine_args(_cfg(id="my-model", device="cpu"))
    assert args.model == FAKE_SOURCE
    assert args.served_model_name == ["my-model"]


def test_hugging_face_id_passes_through_unchanged(tmp_path: Path) -> None:
    args = build_engine_args(_cfg(source="org/some-model", device="cpu"), home=tmp_path)
    assert args.model == "org/some-model"
    assert not any(tmp_path.iterdir())


def test_engine_kwargs_pass_through() -> None:
    kwargs = {
        "dtype": "float32",
        "max_model_len": 1024,
        "enforce_eager": True,
        "gpu_memory_utilization": 0.5,
        "enable_prefix_caching": False,
        "seed": 7,
    }
    args = build_engine_args(_cfg(device="cpu", engine_kwargs=kwargs))
    for name, value in kwargs.items():
        assert getattr(args, name) == value, name


def test_engine_kwargs_coerced_by_the_config_reach_vllm() -> None:
    args = build_engine_args(_cfg(device="cpu", engine_kwargs={"max_model_len": "2048"}))
    assert args.max_model_len == 2048


@pytest.mark.parametrize(
    ("device", "tp", "pp", "backend"),
    [
        ("cpu", 1, 1, None),
        ("gpu", 1, 1, "ray"),
        ("cpu", 2, 1, "mp"),
        ("cpu", 1, 2, "mp"),
        ("gpu", 2, 1, "ray"),
        ("gpu", 8, 2, "ray"),
        ("gpu", 1, 2, "ray"),
    ],
)
def test_parallel_sizes_and_executor(device: str, tp: int, pp: int, backend: str | None) -> None:
    par = {"tensor_parallel_size": tp, "pipeline_parallel_size": pp}
    args = build_engine_args(_cfg(device=device, parallelism=par))
    assert args.tensor_parallel_size == tp
    assert args.pipeline_parallel_size == pp
    assert args.distributed_executor_backend == backend


@pytest.mark.parametrize(
    ("device", "world_size", "backend"),
    [("cpu", 1, None), ("gpu", 1, "ray"), ("cpu", 4, "mp"), ("gpu", 4, "ray")],
)
def test_executor_backend(device: str, world_size: int, backend: str | None) -> None:
    assert executor_backend(device, world_size) == backend


def test_auto_device_picks_the_executor_from_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmserve.engine.args as args_module

    cfg = _cfg(device="auto", parallelism={"tensor_parallel_size": 2})
    monkeypatch.setattr(args_module, "resolve_device", lambda device: "gpu")
    assert build_engine_args(cfg).distributed_executor_backend == "ray"
    monkeypatch.setattr(args_module, "resolve_device", lambda device: "cpu")
    assert build_engine_args(cfg).distributed_executor_backend == "mp"


def test_runner_is_a_default_engine_kwargs_can_override() -> None:
    assert build_engine_args(_cfg(device="cpu"), runner="pooling").runner == "pooling"
    cfg = _cfg(device="cpu", engine_kwargs={"runner": "generate"})
    assert build_engine_args(cfg, runner="pooling").runner == "generate"
    assert build_engine_args(_cfg(device="cpu")).runner == "auto"


def test_shipped_gpu_config_args() -> None:
    model = load_config(CONFIGS / "gpu-tp8-pp2.yaml").models[0]
    args = build_engine_args(model)
    assert args.model == "meta-llama/Llama-3.1-405B-Instruct-FP8"
    assert args.served_model_name == ["llama-3.1-405b-instruct"]
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (8, 2)
    assert args.distributed_executor_backend == "ray"
    assert args.max_model_len == 32768
    assert args.enable_prefix_caching is True


# -- resolve_device ---------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_explicit_device_is_kept(device: str) -> None:
    assert resolve_device(device) == device


@pytest.mark.parametrize(("is_cpu", "expected"), [(True, "cpu"), (False, "gpu")])
def test_auto_device_asks_vllm(monkeypatch: pytest.MonkeyPatch, is_cpu: bool, expected: str):
    import vllm.platforms

    class FakePlatform:
        def is_cpu(self) -> bool:
            return is_cpu

    monkeypatch.setattr(vllm.platforms, "current_platform", FakePlatform())
    assert resolve_device("auto") == expected


def test_auto_device_on_this_machine() -> None:
    from vllm.platforms import current_platform

    assert resolve_device("auto") == ("cpu" if current_platform.is_cpu() else "gpu")


# -- prepare_process_env ----------------------------------------------------------

BIND = "VLLM_CPU_OMP_THREADS_BIND"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Unset the variables these tests write; monkeypatch restores them afterwards."""
    for name in (BIND, "LLMSERVE_TEST_VAR"):
        monkeypatch.setenv(name, "x")  # recorded, so that teardown restores the original
        monkeypatch.delenv(name)
    return monkeypatch


def test_env_vars_are_exported(clean_env: pytest.MonkeyPatch) -> None:
    prepare_process_env(_cfg(device="cpu", env_vars={"LLMSERVE_TEST_VAR": "42"}))
    assert os.environ["LLMSERVE_TEST_VAR"] == "42"
    assert BIND not in os.environ


def test_cpu_tensor_parallel_binds_each_rank_to_its_cores(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {3, 2, 1, 0})
    prepare_process_env(_cfg(device="cpu", parallelism={"tensor_parallel_size": 2}))
    assert os.environ[BIND] == "0-1|2-3"


def test_a_configured_binding_wins(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cfg = _cfg(device="cpu", parallelism={"tensor_parallel_size": 2}, env_vars={BIND: "0|2"})
    prepare_process_env(cfg)
    assert os.environ[BIND] == "0|2"


def test_gpu_engines_get_no_cpu_binding(clean_env: pytest.MonkeyPatch) -> None:
    prepare_process_env(_cfg(device="gpu", parallelism={"tensor_parallel_size": 2}))
    assert BIND not in os.environ


def test_too_few_cores_for_cpu_tensor_parallel(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(ValueError, match="need 2 cores"):
        prepare_process_env(_cfg(device="cpu", parallelism={"tensor_parallel_size": 2}))
