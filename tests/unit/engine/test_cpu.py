"""cpu_threads_bind: VLLM_CPU_OMP_THREADS_BIND for CPU tensor parallelism."""

from __future__ import annotations

import pytest

from llmserve.engine.cpu import cpu_threads_bind

pytestmark = pytest.mark.unit


# -- cpu_threads_bind -----------------------------------------------------------


@pytest.mark.parametrize(
    ("world_size", "cores", "expected"),
    [
        (1, [0], "0"),
        (1, [0, 1, 2, 3], "0-3"),
        (2, [0, 1], "0|1"),
        (2, [0, 1, 2, 3], "0-1|2-3"),
        (2, [3, 2, 1, 0], "0-1|2-3"),
        (4, [0, 1, 2, 3], "0|1|2|3"),
        (3, list(range(9)), "0-2|3-5|6-8"),
        (2, [0, 2, 4, 6], "0,2|4,6"),
        (2, [4, 5, 6, 7], "4-5|6-7"),
    ],
)
def test_cpu_threads_bind(world_size: int, cores: list[int], expected: str) -> None:
    assert cpu_threads_bind(world_size, cores) == expected


def test_cpu_threads_bind_gives_every_rank_the_same_number_of_cores() -> None:
    # 5 cores for 2 ranks: 2 each, the left-over core is not shared.
    assert cpu_threads_bind(2, [0, 1, 2, 3, 4]) == "0-1|2-3"


def test_cpu_threads_bind_ranks_never_share_a_core() -> None:
    slices = cpu_threads_bind(4, list(range(10))).split("|")
    assert len(slices) == 4
    cores = [c for s in slices for c in _expand(s)]
    assert len(cores) == len(set(cores))


def test_cpu_threads_bind_with_too_few_cores_raises() -> None:
    with pytest.raises(ValueError, match="2 CPU workers need 2 cores, only 1 available"):
        cpu_threads_bind(2, [0])
    with pytest.raises(ValueError, match="need 4 cores"):
        cpu_threads_bind(4, [0, 1])


def test_cpu_threads_bind_with_no_ranks_raises() -> None:
    with pytest.raises(ValueError, match="world_size"):
        cpu_threads_bind(0, [0, 1])


def _expand(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out
