"""CPU accounting over a server's whole process tree, for ``bench_serving.py``.

A server under test is the process the benchmark spawned plus every process it
starts, directly or not: vLLM's engine core, Ray's GCS, raylet and workers,
HAProxy. They come and go while it runs, so the tree is looked up afresh at
every sample. A process is keyed by (pid, create time), which a recycled pid
cannot fake.

Over a window (one concurrency level, or the idle window) each process counts
the user+system CPU it used between the first sample and its last one:

- a process that appears during the window counts from 0 (all its life);
- a process that vanishes counts up to the last sample that saw it; whatever
  it used after that sample is lost, so the count is a lower bound;
- a process that both appears and vanishes between two samples is missed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import psutil

GROUPS = ("engine", "frontend", "proxy", "ray", "other")

# First match wins, so the specific ``ray::`` actors come before the catch-all.
# Matched against "<name> <cmdline>"; vLLM and Ray set process titles, which
# replace the command line.
_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # The engine core and its workers; ``multiprocessing.spawn`` is one of
    # them before it has named itself.
    ("engine", ("VLLM::EngineCore", "VLLM::Worker", "multiprocessing.spawn")),
    # Serve replicas: the ingress hosts the fused model's frontend, a separate
    # LLM replica its own.
    (
        "frontend",
        (
            "ray::ServeReplica",
            "VLLM::APIServer",
            "vllm.entrypoints.openai.api_server",
            "vllm serve",
        ),
    ),
    ("proxy", ("haproxy", "ray::ProxyActor", "ray::HAProxyManager")),
    # Ray's daemons, its Python agents and workers (all under site-packages/ray/),
    # every other actor (ServeController, DashboardAgent, RuntimeEnvAgent, IDLE),
    # and the ``llmserve run`` driver that started this Ray.
    ("ray", ("ray::", "gcs_server", "raylet", "site-packages/ray/", "llmserve run")),
)


def classify(name: str, cmdline: str) -> str:
    """The group of a process, one of ``GROUPS``, from its name and command line."""
    text = f"{name} {cmdline}"
    for group, patterns in _RULES:
        if any(pattern in text for pattern in patterns):
            return group
    return "other"


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class ProcSample:
    """One process as seen at one sample."""

    name: str
    cmdline: str
    cpu_s: float


ProcKey = tuple[int, float]  # (pid, create time)
Snapshot = dict[ProcKey, ProcSample]


def snapshot(root_pid: int) -> Snapshot:
    """user+sys CPU seconds of ``root_pid`` and all its current descendants."""
    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    snap: Snapshot = {}
    for proc in tree:
        with contextlib.suppress(psutil.Error), proc.oneshot():
            times = proc.cpu_times()
            key = (proc.pid, proc.create_time())
            snap[key] = ProcSample(proc.name(), " ".join(proc.cmdline()), times.user + times.system)
    return snap


@dataclass(frozen=True)
class ProcCpu:
    """CPU one process used over a window."""

    pid: int
    name: str
    cmdline: str
    group: str
    cpu_s: float
    new: bool  # not in the first sample: counted from 0
    vanished: bool  # not in the last sample: counted up to the last one that saw it


def process_cpu(snapshots: Sequence[Snapshot]) -> list[ProcCpu]:
    """CPU of every process seen between the first and the last snapshot, most first.

    Names and groups come from the latest sample of each process: a Ray worker
    that was ``ray::IDLE`` may have become a replica since.
    """
    first, last = snapshots[0], snapshots[-1]
    latest: Snapshot = {}
    for snap in snapshots:
        latest.update(snap)
    found = []
    for key, sample in latest.items():
        start = first.get(key)
        found.append(
            ProcCpu(
                pid=key[0],
                name=sample.name,
                cmdline=sample.cmdline[:200],
                group=classify(sample.name, sample.cmdline),
                cpu_s=sample.cpu_s - (start.cpu_s if start else 0.0),
                new=start is None,
                vanished=key not in last,
            )
        )
    return sorted(found, key=lambda p: -p.cpu_s)


@dataclass(frozen=True)
class WindowCpu:
    """CPU of a process tree over one window of wall time."""

    wall_s: float
    processes: list[ProcCpu]

    def by_group(self) -> dict[str, float]:
        """CPU seconds per group (every group present, 0 when none)."""
        groups = dict.fromkeys(GROUPS, 0.0)
        for proc in self.processes:
            groups[proc.group] += proc.cpu_s
        return groups


class TreeMeter:
    """Samples a process tree's CPU in a background thread while a block runs.

    ``with TreeMeter(pid) as meter: ...`` then ``meter.window``.
    """

    def __init__(self, root_pid: int, interval_s: float = 1.0) -> None:
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.window: WindowCpu | None = None
        self._snapshots: list[Snapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMeter:
        self._snapshots = [snapshot(self.root_pid)]
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._snapshots.append(snapshot(self.root_pid))
        wall_s = time.perf_counter() - self._t0
        self.window = WindowCpu(wall_s, process_cpu(self._snapshots))

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._snapshots.append(snapshot(self.root_pid))


# --------------------------------------------------------------------------- results


def idle_cores(idle: WindowCpu) -> dict[str, float]:
    """The idle background per group, in cores (CPU seconds per wall second)."""
    return {group: cpu_s / idle.wall_s for group, cpu_s in idle.by_group().items()}


def idle_report(idle: WindowCpu) -> dict:
    """JSON-ready idle background: % of one core per group and in total."""
    percent = {group: 100 * cores for group, cores in idle_cores(idle).items()}
    percent["total"] = sum(percent.values())
    return {
        "wall_s": idle.wall_s,
        "percent_of_core": percent,
        "processes": [asdict(p) for p in idle.processes],
    }


def cpu_ms_per_token(
    window: WindowCpu, idle: dict[str, float], tokens: int
) -> dict[str, float | None]:
    """ms of CPU per output token, per group and ``total``, less the idle background.

    ``idle`` is the background in cores per group (``idle_cores``); it runs
    for the whole window, so ``idle × wall`` is taken off each group first.
    """
    groups = window.by_group()
    if tokens <= 0:
        return dict.fromkeys([*GROUPS, "total"])
    per_token = {
        group: 1000 * (cpu_s - idle.get(group, 0.0) * window.wall_s) / tokens
        for group, cpu_s in groups.items()
    }
    per_token["total"] = sum(per_token.values())
    return per_token


def level_report(window: WindowCpu, idle: dict[str, float], tokens: int) -> dict:
    """JSON-ready CPU of one concurrency level."""
    cpu_s = window.by_group()
    cpu_s["total"] = sum(cpu_s.values())
    return {
        "wall_s": window.wall_s,
        "output_tokens": tokens,
        "cpu_s": cpu_s,
        "idle_cpu_s": sum(idle.values()) * window.wall_s,
        "ms_per_token": cpu_ms_per_token(window, idle, tokens),
        "new_processes": sum(p.new for p in window.processes),
        "vanished_processes": [f"{p.pid} {p.name}" for p in window.processes if p.vanished],
        "processes": [asdict(p) for p in window.processes],
    }
