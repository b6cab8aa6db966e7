"""runtime: the Serve config that `llmserve build` writes, and the Ray Serve flags we set.

``runtime.connect`` starts Ray, so it is not called here; the e2e tests run it.
"""

from __future__ import annotations

import inspect
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmserve.config import load_config, validate_config_dict
from llmserve.runtime import lifecycle as runtime

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DEFAULT = REPO / "configs" / "default.yaml"


def test_serve_config_of_the_default_config() -> None:
    config = load_config(DEFAULT)
    assert runtime.serve_config(DEFAULT, config) == {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": [
            {
                "name": "llmserve",
                "route_prefix": "/",
                "import_path": "llmserve.builder.app:app_builder",
                "args": {"config_path": str(DEFAULT)},
            }
        ],
    }


def test_serve_config_follows_the_ingress_settings(tmp_path: Path, monkeypatch) -> None:
    config = validate_config_dict(
        {
            "ingress": {"host": "0.0.0.0", "port": 9000, "route_prefix": "/api"},
            "models": [{"id": "tiny", "source": "builtin:tiny-llama"}],
        }
    )
    monkeypatch.chdir(tmp_path)
    data = runtime.serve_config(Path("app.yaml"), config)
    assert data["http_options"] == {"host": "0.0.0.0", "port": 9000}
    [app] = data["applications"]
    assert app["route_prefix"] == "/api"
    # `serve deploy` runs the builder in another process and folder: the path is absolute
    assert app["args"] == {"config_path": str(tmp_path / "app.yaml")}


def test_serve_config_is_plain_yaml() -> None:
    data = runtime.serve_config(DEFAULT, load_config(DEFAULT))
    assert yaml.safe_load(yaml.safe_dump(data)) == data


def _serve_constants_source() -> str:
    import ray.serve._private.constants as constants

    return inspect.getsource(constants)


def test_direct_ingress_flags_are_real_ray_serve_flags() -> None:
    source = _serve_constants_source()
    for name in runtime.DIRECT_INGRESS_ENV:
        assert f'"{name}"' in source, f"Ray Serve no longer reads {name}"


def test_every_ray_serve_variable_runtime_sets_is_read_by_ray_serve() -> None:
    # e.g. the HAProxy stats/metrics ports that connect() moves to free ports
    names = set(re.findall(r'"(RAY_SERVE_[A-Z0-9_]+)"', inspect.getsource(runtime)))
    assert {"RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"} <= names
    source = _serve_constants_source()
    assert {n for n in names if f'"{n}"' not in source} == set()


def test_the_direct_ingress_values_turn_the_flags_on() -> None:
    """Serve reads its flags at import; with our values they must read as enabled."""
    names = sorted(n for n in runtime.DIRECT_INGRESS_ENV if n.startswith("RAY_SERVE_ENABLE_"))
    assert len(names) == 2
    code = f"import ray.serve._private.constants as c; print(*(getattr(c, n) for n in {names!r}))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env.update(runtime.DIRECT_INGRESS_ENV)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"] * len(names)


def test_the_idle_settings_reach_ray_and_serve() -> None:
    """RayConfig.process_env's variables, as Ray and Serve read them in a fresh process."""
    from llmserve.config import RayConfig

    cfg = RayConfig(serve_control_loop_interval_s=0.75, metrics_report_interval_s=42)
    code = (
        "from ray._raylet import Config; import ray.serve._private.constants as c; "
        "print(c.CONTROL_LOOP_INTERVAL_S, Config.metrics_report_interval_ms())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(cfg.process_env())
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0.75", "42000"]


def test_picked_ports_are_free_and_out_of_reach_of_port_zero_binds() -> None:
    """HAProxy binds the picked stats/metrics ports seconds later; a port from the kernel's
    ephemeral range could be taken meanwhile by any bind to port 0 (Ray's own servers)."""
    from ray.serve._private.constants import RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT

    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(20):
        port = runtime.pick_port()
        assert not low <= port <= high
        assert not 10002 <= port <= 19999, "`ray start`'s default worker ports"
        assert port < RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))  # free right now


def test_an_explicit_gcs_address_turns_token_auth_on_when_a_token_is_at_hand(tmp_path) -> None:
    """Ray finds the token itself for "auto" (and a Ray client address needs none), not for
    ``--address 10.0.0.5:6379``: that one would fail as "Unauthenticated" without this."""
    code = (
        "import os\n"
        "from llmserve.runtime.lifecycle import _use_local_auth_token\n"
        "for address in ('auto', 'ray://10.0.0.5:10001', '10.0.0.5:6379'):\n"
        "    _use_local_auth_token(address)\n"
        "    print(os.environ.get('RAY_AUTH_MODE'))\n"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    env["RAY_AUTH_TOKEN"] = "0123456789abcdef"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "None", "token"]
