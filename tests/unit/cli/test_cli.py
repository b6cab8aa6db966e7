"""The ``llmserve`` command in-process: validate, build, models list, --help.

None of these commands start Ray or an engine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmserve.cli.main import EXIT_CONFIG, main

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DEFAULT = REPO / "configs" / "default.yaml"
LLMSERVE = Path(sys.executable).parent / "llmserve"

BAD = """\
models:
  - id: x
    source: builtin:tiny-llama
    engine_kwargs:
      max_model_lenn: 10
  - id: x
    source: builtin:tiny-llama
ingress:
  port: eighty
"""
BAD_PROBLEMS = {
    "models[0].engine_kwargs.max_model_lenn": "unknown vLLM engine argument 'max_model_lenn'",
    "models[1].id": "duplicate id 'x'",
    "ingress.port": "valid integer",
}


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


def test_validate_a_good_config(capsys) -> None:
    assert main(["validate", str(DEFAULT)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{DEFAULT}: OK (models: smollm2, rag-docs)"
    assert err == ""


def test_validate_reports_every_problem_with_its_yaml_path(bad_config: Path, capsys) -> None:
    assert main(["validate", str(bad_config)]) == EXIT_CONFIG == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0] == f"invalid config {bad_config}:"
    problems = dict(line.split(": ", 1) for line in lines[1:])
    assert set(problems) == set(BAD_PROBLEMS)
    for path, fragment in BAD_PROBLEMS.items():
        assert fragment in problems[path], (path, problems[path])
    assert "did you mean 'max_model_len'" in problems["models[0].engine_kwargs.max_model_lenn"]
    assert "Traceback" not in err


def test_validate_a_missing_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["validate", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert f"{missing}: no such file" in err
    assert "Traceback" not in err


def test_validate_invalid_yaml_points_at_the_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  - id: x\n    source: [unclosed\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "invalid YAML at line" in err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(bad_config: Path) -> None:
    from llmserve.config import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "validate", str(bad_config)])


def test_build_writes_a_serve_config_that_ray_accepts(tmp_path: Path, capsys) -> None:
    from ray.serve.schema import ServeDeploySchema

    out = tmp_path / "serve.yaml"
    assert main(["build", str(DEFAULT), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    data = yaml.safe_load(out.read_text())
    schema = ServeDeploySchema.model_validate(data)
    [app] = schema.applications
    assert app.import_path == "llmserve.builder.app:app_builder"
    assert app.route_prefix == "/"
    assert app.args == {"config_path": str(DEFAULT)}
    assert (schema.http_options.host, schema.http_options.port) == ("127.0.0.1", 8000)


def test_the_built_import_path_builds_the_app(tmp_path: Path) -> None:
    """What `serve deploy serve.yaml` does with the file: import the builder and call it."""
    from ray.serve import Application
    from ray.serve._private.utils import import_attr

    out = tmp_path / "serve.yaml"
    assert main(["build", str(DEFAULT), "-o", str(out)]) == 0
    [app] = yaml.safe_load(out.read_text())["applications"]
    builder = import_attr(app["import_path"])
    assert isinstance(builder(app["args"]), Application)


def test_build_refuses_a_bad_config(bad_config: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "serve.yaml"
    assert main(["build", str(bad_config), "-o", str(out)]) == 2
    assert not out.exists()
    assert "models[1].id" in capsys.readouterr().err


def test_models_list_names_every_builtin_as_a_config_source(capsys) -> None:
    from llmserve.config import validate_config_dict
    from llmserve.models import BUILTIN_PREFIX, BUILTINS, builtin_models

    assert main(["models", "list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert rows == [[BUILTIN_PREFIX + name, m.description] for name, m in BUILTINS.items()]
    # Each listed name is a config `source` that names that built-in.
    models = [{"id": f"m{i}", "source": source} for i, (source, _) in enumerate(rows)]
    assert builtin_models(validate_config_dict({"models": models})) == sorted(BUILTINS)


def test_models_prepare_rejects_an_unknown_name(capsys) -> None:
    assert main(["models", "prepare", "gpt-5"]) == 1
    err = capsys.readouterr().err
    assert "unknown built-in model 'gpt-5'" in err
    assert "tiny-llama" in err


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 1
    assert "usage: llmserve" in capsys.readouterr().out


SUBCOMMANDS = [
    [],
    ["run"],
    ["deploy"],
    ["validate"],
    ["status"],
    ["shutdown"],
    ["build"],
    ["models"],
    ["models", "prepare"],
    ["models", "list"],
    ["index"],
]


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=lambda c: " ".join(c) or "llmserve")
def test_every_command_has_help(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: llmserve {' '.join(command)}".rstrip())


def test_the_console_script(bad_config: Path) -> None:
    assert LLMSERVE.exists(), "pip install -e . puts the llmserve script next to python"
    result = subprocess.run(
        [str(LLMSERVE), "validate", str(bad_config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"invalid config {bad_config}:" in result.stderr
    for path in BAD_PROBLEMS:
        assert f"{path}: " in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_run_says_who_holds_its_port_before_starting_anything(tmp_path: Path, capsys) -> None:
    """A taken port would fail only once Ray and Serve have started ("HAProxy crashed
    during startup ... Address already in use"), without saying what holds it."""
    import os
    import socket

    import ray

    from llmserve.runtime.ports import pick_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", pick_port()))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "ingress": {"port": port},
                    "models": [{"id": "m", "source": "builtin:tiny-llama", "device": "cpu"}],
                }
            )
        )
        assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: port {port} on 127.0.0.1 is in use: by pid {os.getpid()} (")
    assert not ray.is_initialized()
