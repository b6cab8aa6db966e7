"""builder.serve_config: the Serve config file that `llmserve build` writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmserve.builder.app import APP_NAME, app_builder
from llmserve.builder.serve_config import serve_config
from llmserve.config import load_config, validate_config_dict
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit

DEFAULT = CONFIGS / "default.yaml"


def test_serve_reads_the_file_as_this_app_built_from_this_config() -> None:
    from ray.serve._private.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    config = load_config(DEFAULT)
    schema = ServeDeploySchema.model_validate(serve_config(DEFAULT, config))
    [app] = schema.applications
    assert app.name == APP_NAME
    assert import_attr(app.import_path) is app_builder
    assert app.args == {"config_path": str(DEFAULT)}
    assert app.route_prefix == config.ingress.route_prefix
    assert (schema.http_options.host, schema.http_options.port) == (
        config.ingress.host,
        config.ingress.port,
    )


def test_serve_config_follows_the_ingress_settings(tmp_path: Path, monkeypatch) -> None:
    config = validate_config_dict(
        {
            "ingress": {"host": "0.0.0.0", "port": 9000, "route_prefix": "/api"},
            "models": [{"id": "tiny", "source": "builtin:tiny-llama"}],
        }
    )
    monkeypatch.chdir(tmp_path)
    data = serve_config(Path("app.yaml"), config)
    assert data["http_options"] == {"host": "0.0.0.0", "port": 9000}
    [app] = data["applications"]
    assert app["route_prefix"] == "/api"
    # `serve deploy` runs the builder in another process and folder: the path is absolute
    assert app["args"] == {"config_path": str(tmp_path / "app.yaml")}


def test_serve_config_is_plain_yaml() -> None:
    data = serve_config(DEFAULT, load_config(DEFAULT))
    assert yaml.safe_load(yaml.safe_dump(data)) == data
