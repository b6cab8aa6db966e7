"""App builder: one validated config -> one Ray Serve application.

Every model (but the fused one, which runs inside the ingress), and every
RAG stage, is its own deployment with its own replica settings. The ingress
gets one ``Route`` per served id, built here (``ingress/routes.py``), so a
redeploy of a changed config rebuilds its routing from that config.

The call graph is a DAG: the ingress calls deployments, and no deployment
ever calls back up. A fused model runs inside the ingress, so the pipelines
that generate with it run their router there too (see ``LocalPipeline``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from llmserve.builder import versions
from llmserve.builder.options import deployment_name, engine_deployment_options
from llmserve.builder.rag import add_rag_deployments
from llmserve.config import AppConfig, ModelConfig
from llmserve.ingress.caps import Caps
from llmserve.ingress.deployment import Ingress
from llmserve.ingress.routes import Local, Route, RouteTable
from llmserve.servers.llm_server import LLMServer
from llmserve.servers.protocol import GENERATION_ENDPOINTS

APP_NAME = "llmserve"
INGRESS_NAME = "ingress"


def build_app(config: AppConfig) -> Application:
    home = str(config.home_dir())
    routes = RouteTable()
    for model in config.models:
        _add_model(config, model, routes, home)
    add_rag_deployments(config, routes, home)

    retry_after = config.ingress.retry_after_s
    ingress_limits = config.ingress.deployment
    fused_id = config.ingress.fused_model
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
    return versions.bind(ingress, config.ingress, routes, fused, home)


def _add_model(config: AppConfig, model: ModelConfig, routes: RouteTable, home: str) -> None:
    """A generative model's route, and those of its LoRA adapters (served by its engine)."""
    if model.id == config.ingress.fused_model:
        # Served inside the ingress replicas, which bound it themselves.
        route = Route(
            model.id,
            GENERATION_ENDPOINTS,
            card={"id": model.id, "root": model.source, "kind": "model"},
            local=Local.FUSED_MODEL,
            timeout_s=model.request_timeout_s,
            limits=model.deployment.limits(),
            caps=Caps.for_model(model.limits),
        )
    else:
        name = deployment_name("llm", model.id)
        options = engine_deployment_options(model, config.ingress.retry_after_s)
        if model.lora is not None:  # loaded by LLMServer.reconfigure, no restart
            options["user_config"] = {"lora_adapters": dict(model.lora.adapters)}
        deployment = serve.deployment(LLMServer).options(name=name, **options)
        handle = versions.bind(deployment, model, home)
        route = Route(
            model.id,
            GENERATION_ENDPOINTS,
            card={"id": model.id, "root": model.source, "kind": "model"},
            handle=handle,
            deployment=name,
            timeout_s=model.request_timeout_s,
            resumable=model.resumes_streams(fused=False),
            caps=Caps.for_model(model.limits),
        )
        routes.metrics_sources.append(handle)
    routes.add(route)
    for adapter, path in (model.lora.adapters if model.lora else {}).items():
        card = {"id": adapter, "root": path, "parent": model.id, "kind": "lora"}
        # Same engine, gate, timeout, caps and resumability as its base model.
        routes.add(replace(route, id=adapter, card=card, base=model.id))


def app_builder(args: dict[str, Any]) -> Application:
    """Entry point for plain ``serve deploy`` (see ``llmserve build``)."""
    from llmserve.config import load_config, validate_config_dict

    if "config_path" in args:
        return build_app(load_config(Path(args["config_path"])))
    return build_app(validate_config_dict(args["config"], base_dir=Path(args.get("base_dir", "."))))
