"""CPU core binding for vLLM's CPU backend with several workers (tensor parallel)."""

from __future__ import annotations


def cpu_threads_bind(world_size: int, cores: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for vLLM's CPU backend: one core list per rank.

    Cores are split into equal contiguous slices, e.g. 2 ranks on cores
    [0, 1, 2, 3] -> ``"0-1|2-3"``. vLLM's CPU TP needs every rank on its own cores.
    """
    cores = sorted(cores)
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    if len(cores) < world_size:
        raise ValueError(
            f"{world_size} CPU workers need {world_size} cores, only {len(cores)} available"
        )
    per_rank = len(cores) // world_size
    slices = [cores[i * per_rank : (i + 1) * per_rank] for i in range(world_size)]
    return "|".join(_core_list(s) for s in slices)


def _core_list(cores: list[int]) -> str:
    if cores == list(range(cores[0], cores[-1] + 1)) and len(cores) > 1:
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(str(c) for c in cores)
