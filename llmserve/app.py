"""App builder: one validated config -> one Ray Serve application.

Every model, and every RAG stage, is its own deployment with its own
replica settings. The ingress gets ``{id: handle}`` maps built here, so a
redeploy of a changed config rebuilds its routing from that config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from llmserve.config import AppConfig
from llmserve.deployments.ingress import Ingress, IngressSettings, Routes
from llmserve.deployments.llm_server import LLMServer
from llmserve.deployments.options import deployment_name, engine_deployment_options

APP_NAME = "llmserve"
INGRESS_NAME = "ingress"


def build_app(config: AppConfig) -> Application:
    home = str(config.home_dir())
    routes = Routes()
    fused_id = config.ingress.fused_model
    for model in config.models:
        routes.model_cards.append({"id": model.id, "root": model.source, "kind": "model"})
        if model.id == fused_id:
            # Served inside the ingress replicas; the RAG router reaches it by name.
            routes.chat[model.id] = routes.completions[model.id] = INGRESS_NAME
            continue
        deployment = serve.deployment(LLMServer).options(
            name=deployment_name("llm", model.id), **engine_deployment_options(model)
        )
        handle = deployment.bind(model, home)
        routes.chat[model.id] = handle
        routes.completions[model.id] = handle
        routes.metrics_sources.append(handle)

    from llmserve.rag_app import add_rag_deployments

    add_rag_deployments(config, routes, home)

    settings = IngressSettings(
        api_keys=config.ingress.resolve_api_keys(),
        max_request_body_bytes=config.ingress.max_request_body_bytes,
    )
    if fused_id is None:
        options, fused = config.ingress.deployment.to_serve_options(), None
    else:
        fused = config.get_model(fused_id)
        options = engine_deployment_options(fused)
    ingress = serve.deployment(serve.ingress()(Ingress)).options(name=INGRESS_NAME, **options)
    return ingress.bind(settings, routes, fused, home)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for plain ``serve deploy`` (see ``llmserve build``)."""
    from llmserve.config import load_config, validate_config_dict

    if "config_path" in args:
        return build_app(load_config(Path(args["config_path"])))
    return build_app(validate_config_dict(args["config"], base_dir=Path(args.get("base_dir", "."))))
