"""Which deployments get the prefix-aware router, and who routes with it.

Serve builds a router per handle from the *called* deployment's
``request_router_config``, so setting it on a model's deployment covers every
caller: the ingress, and the RAG pipeline routers that generate with it.
"""

from __future__ import annotations

import copy

import pytest
from ray.serve import Application

from llmserve.builder.app import build_app
from llmserve.config import validate_config_dict
from llmserve.servers.routing.router import ROUTER_CLASS
from tests.conftest import ROOT
from tests.unit.builder.test_app import _applications
from tests.unit.builder.test_versions import changed

pytestmark = pytest.mark.unit

MODEL = {"source": "builtin:tiny-llama", "device": "cpu"}


def app_data(tmp_path, **deployment) -> dict:
    return {
        "ingress": {"fused_model": "fused"},
        "models": [
            {"id": "fused", **MODEL},
            {"id": "gen", **MODEL, "deployment": {"num_replicas": 2, **deployment}},
        ],
        "embedders": [{"id": "emb", "source": "builtin:all-minilm-l6-v2", "device": "cpu"}],
        "retrievers": [
            {
                "id": "docs",
                "embedder": "emb",
                "uri": str(tmp_path / "index"),
                "corpus": {"paths": [str(ROOT / "docs")]},
            }
        ],
        "pipelines": [{"id": "rag", "retriever": "docs", "generator": "gen"}],
    }


def deployments(data: dict) -> dict[str, Application]:
    found: dict[str, Application] = {}

    def collect(app: Application) -> None:
        dep = app._bound_deployment
        if dep.name not in found:
            found[dep.name] = app
            for child in _applications((dep.init_args, dep.init_kwargs)):
                collect(child)

    collect(build_app(validate_config_dict(data)))
    return found


def router_of(app: Application):
    return app._bound_deployment._deployment_config.request_router_config


def test_a_model_deployment_routes_by_prefix_by_default_with_its_settings(tmp_path) -> None:
    found = deployments(app_data(tmp_path, prefix_router={"imbalance_threshold": 7}))
    router = router_of(found["llm-gen"])
    assert router.request_router_class == ROUTER_CLASS
    assert router.request_router_kwargs["base_model"] == "gen"
    assert router.request_router_kwargs["imbalance_threshold"] == 7
    # the other deployments keep Serve's router
    for name in ("ingress", "rag-rag", "embedder-emb", "retriever-docs"):
        assert router_of(found[name]).request_router_class != ROUTER_CLASS, name


def test_power_of_two_keeps_serves_own_router(tmp_path) -> None:
    found = deployments(app_data(tmp_path, request_router="power_of_two"))
    assert router_of(found["llm-gen"]).request_router_class != ROUTER_CLASS
    assert router_of(found["llm-gen"]).request_router_kwargs == {}


def test_the_rag_router_generates_through_the_models_routed_deployment(tmp_path) -> None:
    found = deployments(app_data(tmp_path))
    rag = found["rag-rag"]._bound_deployment
    callees = {a._bound_deployment.name for a in _applications(rag.init_args)}
    assert "llm-gen" in callees


def test_a_changed_router_restarts_its_callers_and_nothing_else(tmp_path) -> None:
    base = app_data(tmp_path)
    before = {n: a._bound_deployment.version for n, a in deployments(base).items()}
    edited = copy.deepcopy(base)
    edited["models"][1]["deployment"]["prefix_router"] = {"imbalance_threshold": 9}
    after = {n: a._bound_deployment.version for n, a in deployments(edited).items()}
    # a handle builds its router once: the callers restart to get the new one; the
    # model's own replicas (Serve applies the deployment block in place) do not
    assert changed(before, after) == {"ingress", "rag-rag"}
