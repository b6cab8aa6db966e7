"""The app builder: one validated config -> one Ray Serve application (see ``app.py``)."""

from llmserve.builder.app import APP_NAME, INGRESS_NAME, app_builder, build_app

__all__ = ["APP_NAME", "INGRESS_NAME", "app_builder", "build_app"]
