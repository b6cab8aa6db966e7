"""scripts/bench_serving.py: process groups, CPU accounting, bare bracketing, report, plot."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import load_script

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def bench():
    """bench_serving with its sibling modules, as ``python scripts/bench_serving.py`` sees them."""
    return load_script("bench_serving")


@pytest.fixture(scope="module")
def cpu(bench):
    return sys.modules["bench_cpu"]


@pytest.fixture(scope="module")
def report(bench):
    return sys.modules["bench_report"]


# --------------------------------------------------------------------------- groups

VENV = ".venv/bin/python3"
RAY = ".venv/lib/python3.11/site-packages/ray"


@pytest.mark.parametrize(
    ("name", "cmdline", "group"),
    [
        # bare vLLM
        ("python3", f"{VENV} -m vllm.entrypoints.openai.api_server --model /m", "frontend"),
        ("VLLM::EngineCor", "VLLM::EngineCore", "engine"),
        ("VLLM::Worker", "VLLM::Worker", "engine"),
        (
            "python3",
            f"{VENV} -B -c from multiprocessing.spawn import spawn_main; "
            "spawn_main(tracker_fd=76, pipe_handle=29) --multiprocessing-fork",
            "engine",
        ),
        (
            "python3",
            f"{VENV} -B -c from multiprocessing.resource_tracker import main;main(75)",
            "other",
        ),
        # llmserve
        ("ray::ServeRepli", "ray::ServeReplica:llmserve:ingress", "frontend"),
        (
            "ray::ServeRepli",
            "ray::ServeReplica:llmserve:llm-tiny.initialize_and_get_metadata",
            "frontend",
        ),
        ("haproxy", f"{RAY}_haproxy/bin/haproxy -db -f /tmp/haproxy-serve/f95b.cfg", "proxy"),
        ("ray::ProxyActor", "ray::ProxyActor", "proxy"),
        ("ray::HAProxyMan", "ray::HAProxyManager", "proxy"),
        ("gcs_server", f"{RAY}/core/src/ray/gcs/gcs_server --log_dir=/tmp/ray/x", "ray"),
        ("raylet", f"{RAY}/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/ray/s", "ray"),
        ("ray::SERVE_CONT", "ray::SERVE_CONTROLLER_ACTOR:ServeController.__init__", "ray"),
        ("ray::ServeContr", "ray::ServeController.listen_for_change", "ray"),
        ("ray::DashboardA", "ray::DashboardAgent", "ray"),
        ("ray::RuntimeEnv", "ray::RuntimeEnvAgent", "ray"),
        ("ray::IDLE", "ray::IDLE", "ray"),
        ("python3", f"{VENV} -u {RAY}/_private/log_monitor.py --session-dir=/tmp/ray/x", "ray"),
        ("python3", f"{VENV} -u {RAY}/autoscaler/_private/monitor.py --logs-dir=/x", "ray"),
        ("python3", f"{VENV} {RAY}/_private/workers/default_worker.py --node-ip-address=1", "ray"),
        (
            "llmserve",
            f"{VENV} /work/main/.venv/bin/llmserve run configs/tiny.yaml --port 8102",
            "ray",
        ),
        ("python3", f"{VENV} -m llmserve.engine.reaper 12905", "other"),
    ],
)
def test_processes_are_grouped_by_their_titles(cpu, name, cmdline, group) -> None:
    assert cpu.classify(name, cmdline) == group


# --------------------------------------------------------------------------- accounting


def test_window_counts_new_from_zero_and_vanished_up_to_their_last_sample(cpu) -> None:
    sample = cpu.ProcSample
    engine = sample("VLLM::EngineCor", "VLLM::EngineCore", 5.0)
    before = {(1, 10.0): engine, (2, 10.0): sample("raylet", "raylet", 1.0)}
    before[(3, 11.0)] = sample("gcs_server", "gcs_server", 2.0)
    middle = {
        (1, 10.0): sample("VLLM::EngineCor", "VLLM::EngineCore", 6.0),
        (2, 10.0): sample("raylet", "raylet", 1.2),
        (3, 11.0): sample("gcs_server", "gcs_server", 2.5),  # its last sample
        (4, 20.0): sample("ray::IDLE", "ray::IDLE", 0.3),
    }
    after = {
        (1, 10.0): sample("VLLM::EngineCor", "VLLM::EngineCore", 7.0),
        (2, 10.0): sample("raylet", "raylet", 1.5),
        # the idle worker became the ingress replica
        (4, 20.0): sample("ray::ServeRepli", "ray::ServeReplica:llmserve:ingress", 0.9),
        # pid 3 recycled by a new process: a different key
        (3, 40.0): sample("python3", "python3 -c pass", 0.4),
    }
    procs = {(p.pid, p.name): p for p in cpu.process_cpu([before, middle, after])}

    assert procs[(1, "VLLM::EngineCor")].cpu_s == pytest.approx(2.0)
    gcs = procs[(3, "gcs_server")]
    assert (gcs.cpu_s, gcs.vanished, gcs.new) == (pytest.approx(0.5), True, False)
    replica = procs[(4, "ray::ServeRepli")]
    assert (replica.cpu_s, replica.group, replica.new) == (pytest.approx(0.9), "frontend", True)
    recycled = procs[(3, "python3")]
    assert (recycled.cpu_s, recycled.new, recycled.vanished) == (pytest.approx(0.4), True, False)

    window = cpu.WindowCpu(10.0, list(procs.values()))
    assert window.by_group() == pytest.approx(
        {"engine": 2.0, "frontend": 0.9, "proxy": 0.0, "ray": 1.0, "other": 0.4}
    )
    # 5 % of a core of idle Ray and 1 % of engine over 10 s come off first.
    per_token = cpu.cpu_ms_per_token(window, {"ray": 0.05, "engine": 0.01}, tokens=1000)
    assert per_token == pytest.approx(
        {"engine": 1.9, "frontend": 0.9, "proxy": 0.0, "ray": 0.5, "other": 0.4, "total": 3.7}
    )


def test_idle_background_is_percent_of_one_core(cpu) -> None:
    idle = cpu.WindowCpu(20.0, [_proc(cpu, "ray", 1.0), _proc(cpu, "proxy", 0.2)])
    assert cpu.idle_cores(idle)["ray"] == pytest.approx(0.05)
    percent = cpu.idle_report(idle)["percent_of_core"]
    assert (percent["ray"], percent["proxy"], percent["total"]) == pytest.approx((5.0, 1.0, 6.0))


def test_meter_follows_a_real_tree_as_processes_come_and_go(cpu) -> None:
    # A child that appears after the first sample, burns 0.3 s of CPU and exits.
    script = (
        "import subprocess, sys, time\n"
        "time.sleep(0.3)\n"
        "subprocess.run([sys.executable, '-c',"
        " 'import time\\nwhile time.process_time() < 0.3: pass'])\n"
        "time.sleep(60)\n"
    )
    root = subprocess.Popen([sys.executable, "-c", script])
    try:
        with cpu.TreeMeter(root.pid, interval_s=0.05) as meter:
            seen_child = False
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                children = psutil.Process(root.pid).children()
                seen_child = seen_child or bool(children)
                if seen_child and not children:
                    break
                time.sleep(0.02)
    finally:
        root.kill()
        root.wait()
    window = meter.window
    child = next(p for p in window.processes if p.pid != root.pid)
    assert child.new and child.vanished and child.group == "other"
    assert child.cpu_s >= 0.2
    parent = next(p for p in window.processes if p.pid == root.pid)
    assert not parent.new and not parent.vanished


# --------------------------------------------------------------------------- comparing


def _proc(cpu, group: str, cpu_s: float):
    names = {"engine": "VLLM::EngineCore", "frontend": "ray::ServeReplica:a:ingress"}
    names |= {"proxy": "haproxy", "ray": "raylet", "other": "python3"}
    return cpu.ProcCpu(1, names[group], names[group], group, cpu_s, False, False)


def _system(cpu, levels: dict[int, tuple[float, float, float]], idle_s: float = 0.4) -> dict:
    """A run as measure_system returns it; per level (tok/s, TTFT p50 ms, engine CPU s)."""
    built = {}
    for c, (tput, ttft, engine_s) in levels.items():
        window = cpu.WindowCpu(10.0, [_proc(cpu, "engine", engine_s)])
        built[c] = {
            "output_throughput": tput,
            "median_ttft_ms": ttft,
            "p99_ttft_ms": 2 * ttft,
            "median_tpot_ms": 5.0,
            "median_itl_ms": 5.0,
            "failed": 0,
            "cpu": cpu.level_report(window, {}, tokens=1000),
        }
    idle = cpu.idle_report(cpu.WindowCpu(20.0, [_proc(cpu, "ray", idle_s)]))
    return {"cold_start_s": 30.0, "idle": idle, "levels": built}


@pytest.fixture
def bracketed(cpu) -> dict:
    """bare, llmserve, bare-2: the bare runs differ by 20 % in throughput."""
    return {
        "bare": _system(cpu, {1: (100.0, 10.0, 2.0)}),
        "llmserve": _system(cpu, {1: (81.0, 20.0, 2.75)}, idle_s=2.0),
        "bare-2": _system(cpu, {1: (80.0, 14.0, 3.0)}),
    }


def test_bare_runs_bracket_llmserve_unless_told_not_to(bench) -> None:
    assert bench.run_order(["llmserve", "bare"]) == [
        ("bare", "bare"),
        ("llmserve", "llmserve"),
        ("bare-2", "bare"),
    ]
    assert bench.run_order(["bare", "llmserve"], bracket=False) == [
        ("bare", "bare"),
        ("llmserve", "llmserve"),
    ]
    assert bench.run_order(["llmserve"]) == [("llmserve", "llmserve")]


def test_ratios_are_against_the_mean_of_both_bare_runs(report, bracketed) -> None:
    figures = report.comparisons(bracketed)["llmserve"][1]
    assert figures["throughput_ratio"] == pytest.approx(81 / 90)
    assert figures["ttft_delta_ms"] == pytest.approx(8.0)
    assert figures["cpu_ratio"] == pytest.approx(2.75 / 2.5)
    assert figures["itl_ratio"] == pytest.approx(1.0)


def _table(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the Markdown table under ``heading``, as lists of cells."""
    after = markdown.split(heading, 1)[1]
    table = after[after.index("\n|") :].split("\n\n", 1)[0]
    rows = table.strip().splitlines()[2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_report_marks_missed_targets_and_levels_not_run(report, bracketed) -> None:
    markdown = report.render_markdown(bracketed, [1], ["## heading"])
    targets = {(row[1], row[2]): (row[3], row[5]) for row in _table(markdown, "### targets")}
    assert targets["output throughput vs bare", "1"] == ("0.90×", "missed")
    assert targets["TTFT p50 minus bare", "1"] == ("8.00 ms", "met")
    assert targets["CPU per output token vs bare", "8"] == ("n/a", "not run")
    assert targets["idle background", "–"] == ("10.00 % of a core", "missed")
    level = {row[0]: row for row in _table(markdown, "### concurrency 1")}
    assert level["bare mean"][1:3] == ["90.0", "1.00×"]
    assert level["llmserve"][9:11] == ["2.75", "1.10×"]


def test_plot_writes_a_png(report, bracketed, cpu, tmp_path) -> None:
    for name, levels in (("bare", (120.0, 9.0, 5.0)), ("llmserve", (90.0, 25.0, 6.0))):
        bracketed[name]["levels"][8] = _system(cpu, {8: levels})["levels"][8]
    bracketed["bare-2"]["levels"][8] = _system(cpu, {8: (110.0, 11.0, 5.5)})["levels"][8]
    path = tmp_path / "bench.png"
    report.plot_levels(bracketed, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
