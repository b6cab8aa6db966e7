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
import yaml

from llmserve.config import AppConfig, validate_config_dict
from llmserve.runtime import haproxy
from llmserve.runtime import ray as ray_runtime
from llmserve.runtime.ray import (
    DIRECT_INGRESS_ENV,
    HAPROXY_SERVER_GRACE_S,
    LOCAL,
    Install,
    local_ray_options,
    serve_env,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / "configs"


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
    names |= set(re.findall(r'"(RAY_SERVE_[A-Z0-9_]+)"', inspect.getsource(haproxy)))
    assert {"RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"} <= names
    assert {"RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S", "RAY_SERVE_HAPROXY_BINARY_PATH"} <= names
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
    ray = {"direct_ingress": direct_ingress, "separate_user_code_thread": separate_thread}
    cfg = _config(ray=ray)
    flags = _in_fresh_process(SERVE_FLAGS, serve_env(cfg))
    assert flags == [str(direct_ingress), str(direct_ingress), str(separate_thread)]


def test_the_idle_settings_reach_ray_and_serve() -> None:
    """RayConfig.process_env's variables (part of serve_env), as a fresh process reads them."""
    cfg = _config(ray={"serve_control_loop_interval_s": 0.75, "metrics_report_interval_s": 42})
    assert cfg.ray.process_env().items() <= serve_env(cfg).items()
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
    extra = {k: v for k, v in env.items() if k not in serve_env(config)}
    assert {k: env[k] for k in serve_env(config)} == serve_env(config)
    ports = {
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    }
    assert set(extra) == (ports if direct_ingress else set())
    assert all(int(port) > 0 for port in extra.values())


def _config(**raw) -> AppConfig:
    return validate_config_dict({"models": [{"id": "m", "source": "builtin:tiny-llama"}], **raw})


HAPROXY_READS = (
    "from ray.serve._private.haproxy import HAProxyConfig, get_haproxy_binary; "
    "c = HAProxyConfig(); print(c.timeout_server_s, c.timeout_client_s, get_haproxy_binary())"
)


def test_haproxy_waits_for_the_longest_request_and_for_a_client_as_long_as_the_ingress() -> None:
    """timeout server: longer than any request may take (the ingress's own 504 comes
    first); timeout client: ingress.send_timeout_s. As Serve reads them."""
    cfg = validate_config_dict(
        {
            "ingress": {"request_timeout_s": 100, "send_timeout_s": 12.5},
            "models": [
                {"id": "a", "source": "builtin:tiny-llama", "request_timeout_s": 250.5},
                {"id": "b", "source": "builtin:tiny-llama", "request_timeout_s": 20},
            ],
        }
    )
    server, client, binary = _in_fresh_process(HAPROXY_READS, serve_env(cfg))
    assert int(server) == 251 + HAPROXY_SERVER_GRACE_S
    assert int(client) == 13
    assert binary == LOCAL.haproxy_launcher
    # Without overrides, the ingress's own limit (default 300 s) is the longest.
    default = _config()
    server, client, _ = _in_fresh_process(HAPROXY_READS, serve_env(default))
    assert int(server) == default.ingress.request_timeout_s + HAPROXY_SERVER_GRACE_S
    assert int(client) == default.ingress.send_timeout_s


def test_a_pipeline_timeout_counts_too() -> None:
    cfg = validate_config_dict(
        yaml.safe_load((CONFIGS / "default.yaml").read_text())
        | {"ingress": {"request_timeout_s": 10}}
    )
    pipeline = cfg.pipelines[0].model_copy(update={"request_timeout_s": 999})
    cfg = cfg.model_copy(update={"pipelines": [pipeline]})
    assert ray_runtime.longest_request_timeout_s(cfg) == 999


@pytest.mark.parametrize(
    ("raw", "fallback"),
    [
        ({}, "0"),
        ({"ingress": {"deployment": {"autoscaling_config": {"min_replicas": 0}}}}, "1"),
        ({"ingress": {"deployment": {"autoscaling_config": {"min_replicas": 1}}}}, "0"),
    ],
)
def test_serves_python_proxy_stays_behind_haproxy_only_for_an_ingress_that_scales_to_zero(
    raw: dict, fallback: str
) -> None:
    assert serve_env(_config(**raw))[haproxy.FALLBACK_ENV] == fallback


def test_a_fused_models_scaling_is_the_ingress_scaling() -> None:
    model = {
        "id": "m",
        "source": "builtin:tiny-llama",
        "deployment": {"autoscaling_config": {"min_replicas": 0, "max_replicas": 2}},
    }
    cfg = validate_config_dict({"ingress": {"fused_model": "m"}, "models": [model]})
    assert serve_env(cfg)[haproxy.FALLBACK_ENV] == "1"


def test_the_haproxy_launcher_is_where_serve_env_says() -> None:
    launcher = Path(LOCAL.haproxy_launcher)
    assert launcher.is_file() and os.access(launcher, os.X_OK)
    assert LOCAL.python == sys.executable
    image = Install(python="/venv/bin/python", package="/app/llmserve")
    env = serve_env(_config(), image)
    assert env[haproxy.BINARY_ENV] == "/app/llmserve/runtime/llmserve-haproxy"
    assert env[haproxy.PYTHON_ENV] == "/venv/bin/python"
    assert not {haproxy.BINARY_ENV, haproxy.FALLBACK_ENV} & set(
        serve_env(_config(ray={"direct_ingress": False}))
    )


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
