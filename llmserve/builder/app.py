"""App builder: one validated config -> one Ray Serve application.

Every model, and every RAG stage, is its own deployment with its own
replica settings. The ingress gets ``{id: handle}`` maps built here, so a
redeploy of a changed config rebuilds its routing from that config.

The call graph is a DAG: the ingress calls deployments, and no deployment
ever calls back up. A fused model runs inside the ingress, so the pipelines
that generate with it run their router there too (see ``LocalPipeline``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from llmserve.builder import versions
from llmserve.builder.options import deployment_name, engine_deployment_options
from llmserve.builder.rag import add_rag_deployments
from llmserve.config import AppConfig
from llmserve.ingress.deployment import Ingress, IngressSettings, Routes
from llmserve.servers.llm_server import LLMServer

APP_NAME = "llmserve"
INGRESS_NAME = "ingress"


def build_app(config: AppConfig) -> Application:
    home = str(config.home_dir())
    retry_after = config.ingress.retry_after_s
    routes = Routes()
    fused_id = config.ingress.fused_model
    for model in config.models:
        routes.model_cards.append({"id": model.id, "root": model.source, "kind": "model"})
        for adapter, path in (model.lora.adapters if model.lora else {}).items():
            routes.adapters[adapter] = model.id
            routes.model_cards.append(
                {"id": adapter, "root": path, "parent": model.id, "kind": "lora"}
            )
        if model.request_timeout_s is not None:
            routes.timeouts[model.id] = model.request_timeout_s
        if model.id == fused_id:
            # Served inside the ingress replicas, which bound it themselves.
            routes.limits[model.id] = model.deployment.limits()
            continue
        name = deployment_name("llm", model.id)
        options = engine_deployment_options(model, retry_after)
        if model.lora is not None:  # loaded by LLMServer.reconfigure, no restart
            options["user_config"] = {"lora_adapters": dict(model.lora.adapters)}
        deployment = serve.deployment(LLMServer).options(name=name, **options)
        handle = versions.bind(deployment, model, home)
        routes.chat[model.id] = handle
        routes.completions[model.id] = handle
        routes.responses[model.id] = handle
        if model.resumes_streams(fused=False):
            routes.resumable.add(model.id)
        routes.tokenize[model.id] = handle
        routes.metrics_sources.append(handle)
        routes.deployments.append(name)

    add_rag_deployments(config, routes, home)

    settings = IngressSettings(
        api_keys=list(config.ingress.api_keys),
        max_request_body_bytes=config.ingress.max_request_body_bytes,
        request_timeout_s=config.ingress.request_timeout_s,
        retry_after_s=retry_after,
    )
    ingress_limits = config.ingress.deployment
    if fused_id is None:
        options, fused = ingress_limits.to_serve_options(retry_after), None
    else:
        fused = config.get_model(fused_id)
        options = engine_deployment_options(fused, retry_after)
        # The fused model's own limits are its admission gate in the ingress;
        # the replica's Serve limits are the ingress's, so that /health and
        # other models always find a free slot.
        options.update(
            max_ongoing_requests=ingress_limits.max_ongoing_requests,
            max_queued_requests=ingress_limits.max_queued_requests,
        )
    ingress = serve.deployment(serve.ingress()(Ingress)).options(name=INGRESS_NAME, **options)
    return versions.bind(ingress, settings, routes, fused, home)


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for plain ``serve deploy`` (see ``llmserve build``)."""
    from llmserve.config import load_config, validate_config_dict

    if "config_path" in args:
        return build_app(load_config(Path(args["config_path"])))
    return build_app(validate_config_dict(args["config"], base_dir=Path(args.get("base_dir", "."))))
