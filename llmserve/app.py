"""App builder: one validated config -> one Ray Serve application.

Every model, and every RAG stage, is its own deployment with its own
replica settings. The ingress gets ``{id: handle}`` maps built here, so a
redeploy of a changed config rebuilds its routing from that config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from llmserve.config import AppConfig, EngineConfig
from llmserve.deployments.ingress import Ingress, IngressSettings, Routes
from llmserve.deployments.llm_server import LLMServer
from llmserve.engine.args import resolve_device
from llmserve.placement import compute_placement

APP_NAME = "llmserve"
INGRESS_NAME = "ingress"


def deployment_name(kind: str, id_: str) -> str:
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', id_)}"


def engine_deployment_options(cfg: EngineConfig) -> dict[str, Any]:
    """Serve options for a vLLM-backed deployment, placement group included.

    A placement group is needed when an engine has several workers (TP/PP)
    or runs on GPU; a single CPU worker just runs in the replica actor.
    """
    options = cfg.deployment.to_serve_options()
    actor = dict(options.pop("ray_actor_options", {}))
    if cfg.env_vars:
        actor["runtime_env"] = {"env_vars": dict(cfg.env_vars)}
    device = resolve_device(cfg.device)
    par = cfg.parallelism
    if device == "gpu" or par.world_size > 1:
        placement = compute_placement(
            par.tensor_parallel_size,
            par.pipeline_parallel_size,
            device,
            par.placement_strategy,
            par.resources_per_worker,
            replica_resources={"CPU": actor.get("num_cpus", 0)},
        )
        options.update(placement.serve_options())
    options["ray_actor_options"] = actor
    return options


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
