"""The Ray Serve config file ``llmserve build`` writes, for plain ``serve deploy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmserve.builder.app import APP_NAME, app_builder
from llmserve.config import AppConfig

IMPORT_PATH = f"{app_builder.__module__}:{app_builder.__name__}"
"""What Serve imports to build the app from the file's ``args``."""


def serve_config(config_path: Path, config: AppConfig) -> dict[str, Any]:
    """A Ray Serve config file (for plain ``serve deploy``) running this app."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": config.ingress.host, "port": config.ingress.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": config.ingress.route_prefix,
                "import_path": IMPORT_PATH,
                "args": {"config_path": str(config_path.resolve())},
            }
        ],
    }
