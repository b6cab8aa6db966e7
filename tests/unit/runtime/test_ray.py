"""runtime.ray: the Ray and Serve flags llmserve starts Ray with (``serve_env``).

``connect`` starts Ray, so it is not called here; the e2e tests run it.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmserve.config import RayConfig, validate_config_dict
from llmserve.runtime import ray as ray_runtime
from llmserve.runtime.ray import DIRECT_INGRESS_ENV, local_ray_options, serve_env

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def _serve_constants_source() -> str:
    import ray.serve._private.constants as constants

    return inspect.getsource(constants)


def _in_fresh_process(code: str, env: dict[str, str]) -> list[str]:
    """``code``'s printed words, run with ``env`` on top of an environment free of Ray's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_direct_ingress_flags_are_real_ray_serve_flags() -> None:
    source = _serve_constants_source()
    for name in DIRECT_INGRESS_ENV:
        assert f'"{name}"' in source, f"Ray Serve no longer reads {name}"


def test_every_ray_serve_variable_runtime_sets_is_read_by_ray_serve() -> None:
    # e.g. the HAProxy stats/metrics ports that local_ray_options moves to free ports
    names = set(re.findall(r'"(RAY_SERVE_[A-Z0-9_]+)"', inspect.getsource(ray_runtime)))
    assert {"RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"} <= names
    source = _serve_constants_source()
    assert {n for n in names if f'"{n}"' not in source} == set()


SERVE_FLAGS = (
    "import ray.serve._private.constants as c; print(c.RAY_SERVE_ENABLE_HA_PROXY, "
    "c.RAY_SERVE_ENABLE_DIRECT_INGRESS, c.RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD)"
)


@pytest.mark.parametrize("direct_ingress", [True, False])
@pytest.mark.parametrize("separate_thread", [True, False])
def test_serve_reads_the_config_from_serve_env(direct_ingress: bool, separate_thread: bool) -> None:
    """Serve reads its flags at import; with serve_env's values they say what the config says."""
    cfg = RayConfig(direct_ingress=direct_ingress, separate_user_code_thread=separate_thread)
    flags = _in_fresh_process(SERVE_FLAGS, serve_env(cfg))
    assert flags == [str(direct_ingress), str(direct_ingress), str(separate_thread)]


def test_the_idle_settings_reach_ray_and_serve() -> None:
    """RayConfig.process_env's variables (part of serve_env), as a fresh process reads them."""
    cfg = RayConfig(serve_control_loop_interval_s=0.75, metrics_report_interval_s=42)
    assert cfg.process_env().items() <= serve_env(cfg).items()
    code = (
        "from ray._raylet import Config; import ray.serve._private.constants as c; "
        "print(c.CONTROL_LOOP_INTERVAL_S, Config.metrics_report_interval_ms())"
    )
    assert _in_fresh_process(code, serve_env(cfg)) == ["0.75", "42000"]


@pytest.mark.parametrize("direct_ingress", [True, False])
def test_a_local_ray_starts_with_serve_env_and_free_haproxy_ports(direct_ingress: bool) -> None:
    config = validate_config_dict(
        {
            "ray": {"direct_ingress": direct_ingress, "num_cpus": 3},
            "models": [{"id": "m", "source": "builtin:tiny-llama"}],
        }
    )
    options = local_ray_options(config)
    assert options["num_cpus"] == 3
    env = options["env"]
    extra = {k: v for k, v in env.items() if k not in serve_env(config.ray)}
    assert {k: env[k] for k in serve_env(config.ray)} == serve_env(config.ray)
    ports = {"RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"}
    assert set(extra) == (ports if direct_ingress else set())
    assert all(int(port) > 0 for port in extra.values())


def test_an_explicit_gcs_address_turns_token_auth_on_when_a_token_is_at_hand(tmp_path) -> None:
    """Ray finds the token itself for "auto" (and a Ray client address needs none), not for
    ``--address 10.0.0.5:6379``: that one would fail as "Unauthenticated" without this."""
    code = (
        "import os\n"
        "from llmserve.runtime.ray import _use_local_auth_token\n"
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
