"""Turn an engine config into vLLM's ``AsyncEngineArgs``.

``engine_kwargs`` pass straight through to vLLM (the config validated the
keys against vLLM's own fields); llmserve only sets what its config owns:
the model path, the served name, parallel sizes and the executor.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from llmserve.engine.cpu import cpu_threads_bind
from llmserve.engine.device import resolve_device
from llmserve.models import resolve_source

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

    from llmserve.config import EngineConfig


__all__ = ["build_engine_args", "executor_backend", "prepare_process_env", "resolve_device"]


def executor_backend(device: str, world_size: int) -> str | None:
    """Ray executor on GPU, at any world size: the workers hold the GPUs of the
    replica's placement group, while the replica actor itself holds none (Ray
    hides every GPU from an actor that asked for none). Multiprocessing on
    CPU, where vLLM refuses the Ray executor; in-process for one CPU worker."""
    if device == "gpu":
        return "ray"
    return None if world_size == 1 else "mp"


def build_engine_args(
    cfg: EngineConfig, home: Path | None = None, runner: str | None = None
) -> AsyncEngineArgs:
    from vllm.engine.arg_utils import AsyncEngineArgs

    from llmserve.config import ModelConfig

    device = resolve_device(cfg.device)
    par = cfg.parallelism
    kwargs = dict(cfg.engine_kwargs)
    if isinstance(cfg, ModelConfig):
        # ``vllm serve --reasoning-parser`` is an engine argument in vLLM.
        kwargs |= cfg.engine_serving_options()
        if cfg.lora is not None:
            kwargs |= cfg.lora.engine_args()
    if runner is not None:
        kwargs.setdefault("runner", runner)
    return AsyncEngineArgs(
        model=resolve_source(cfg.source, home),
        served_model_name=[cfg.id],
        tensor_parallel_size=par.tensor_parallel_size,
        pipeline_parallel_size=par.pipeline_parallel_size,
        distributed_executor_backend=executor_backend(device, par.world_size),
        **kwargs,
    )


def prepare_process_env(cfg: EngineConfig) -> None:
    """Environment for the engine processes this replica is about to spawn."""
    os.environ.update(cfg.env_vars)
    world = cfg.parallelism.world_size
    if resolve_device(cfg.device) == "cpu" and world > 1:
        os.environ.setdefault(
            "VLLM_CPU_OMP_THREADS_BIND", cpu_threads_bind(world, sorted(os.sched_getaffinity(0)))
        )
