"""RAG stages as separate deployments that scale on their own, and change on their own.

A real app on real Ray Serve: the tiny generator, the MiniLM embedder in
vLLM-CPU, a LanceDB retriever with 2 replicas, and the RAG router. The index
is built through the embedder deployment's batched handle, so this module
also checks that concurrent ``embed`` calls share engine calls. The last test
swaps the pipeline's ``top_k`` under load with ``llmserve deploy``'s code.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import openai
import pytest

from llmserve.config import validate_config_dict
from tests.conftest import ROOT
from tests.fuzz import bases, server_errors
from tests.helpers import free_port, index_through_handle, running_app
from tests.traffic import Traffic, ok, summary

ENGINE = {"dtype": "float32", "enforce_eager": True}


def make_config(tmp_path, port: int | None = None, **rag: int):
    """The app; ``rag`` overrides the ``rag`` pipeline's fields (top_k, top_n)."""
    data = {
        "ingress": {"port": port or free_port()},
        "models": [
            {
                "id": "tiny",
                "source": "builtin:tiny-llama",
                "device": "cpu",
                "engine_kwargs": {**ENGINE, "max_model_len": 2048},
            }
        ],
        "embedders": [
            {
                "id": "minilm",
                "source": "builtin:all-minilm-l6-v2",
                "device": "cpu",
                "engine_kwargs": ENGINE,
                "max_batch_size": 64,
                "batch_wait_timeout_s": 0.05,
            }
        ],
        "retrievers": [
            {
                "id": "docs",
                "embedder": "minilm",
                "uri": str(tmp_path / "index"),
                "corpus": {"paths": [str(ROOT / "docs")]},
                "deployment": {"num_replicas": 2},
            },
            {
                "id": "empty",
                "embedder": "minilm",
                "uri": str(tmp_path / "never-built"),
                "corpus": {"paths": [str(ROOT / "docs")]},
            },
        ],
        "pipelines": [
            {"id": "rag", "retriever": "docs", "generator": "tiny", "top_n": 3, **rag},
            {"id": "unbuilt", "retriever": "empty", "generator": "tiny"},
        ],
    }
    return validate_config_dict(data)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("rag-scaling"))
    with running_app(config) as url:
        yield config, url


def embedder_handle():
    from ray import serve

    return serve.get_deployment_handle("embedder-minilm", app_name="llmserve")


def test_unbuilt_index_is_400_naming_the_index_command(app):
    _, url = app
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="unbuilt", messages=[{"role": "user", "content": "hi"}]
        )
    assert "llmserve index" in err.value.message
    assert "--pipeline unbuilt" in err.value.message


HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "tiny", "messages": [HI], "n": 512}, "n"),
        ("/v1/completions", {"model": "tiny", "prompt": ["hi"] * 9}, "prompt"),
        ("/v1/embeddings", {"model": "minilm", "input": ["hi"] * 257}, "input"),
        ("/v1/chat/completions", {"model": "rag", "messages": [HI], "n": 512}, "n"),
        ("/v1/retrieve", {"pipeline": "rag", "query": "q", "top_k": 51}, "top_k"),
        # The unbuilt pipeline's router refuses these before it would find no index.
        ("/v1/chat/completions", {"model": "unbuilt", "messages": [5, HI]}, "messages[0]"),
        (
            "/v1/responses",
            {
                "model": "unbuilt",
                "input": [HI, {"role": "user", "content": [{"type": "input_text", "text": 1}]}],
            },
            "input[1].content[0].text",
        ),
    ],
)
def test_caps_and_unreadable_conversations_are_400_through_handles(app, path, body, param):
    _, url = app
    response = httpx.post(f"{url}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.fixture(scope="module")
def built(app):
    """Index the docs through the running embedder deployment's handle."""
    config, _ = app
    chunks = index_through_handle(config, "docs")
    assert chunks > 0
    return chunks


def test_concurrent_embed_calls_share_engine_calls(app, built):
    handle = embedder_handle()
    before = handle.stats.remote().result()["engine_calls"]

    async def embed_concurrently(n):
        return await asyncio.gather(*(handle.embed.remote([f"query {i}"]) for i in range(n)))

    vectors = asyncio.run(embed_concurrently(16))
    calls = handle.stats.remote().result()["engine_calls"] - before
    assert [len(v) for v in vectors] == [1] * 16
    assert len(vectors[0][0]) == 384
    assert 1 <= calls < 16, f"16 concurrent calls made {calls} engine calls"


def test_stages_are_separate_deployments_with_their_own_replicas(app, built):
    from ray import serve

    deployments = serve.status().applications["llmserve"].deployments
    assert {"ingress", "llm-tiny", "embedder-minilm", "retriever-docs", "rag-rag"} <= set(
        deployments
    )
    running = {name: d.replica_states.get("RUNNING", 0) for name, d in deployments.items()}
    assert running["retriever-docs"] == 2
    assert running["embedder-minilm"] == 1


def rag_sources(url: str) -> list[dict]:
    """The sources of a short answer from the ``rag`` pipeline."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    answer = client.chat.completions.create(
        model="rag",
        messages=[{"role": "user", "content": "How do I check a config file?"}],
        max_tokens=4,
    )
    return answer.model_extra["sources"]


def test_two_retriever_replicas_serve_correctly(app, built):
    _, url = app

    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            body = {"pipeline": "rag", "query": "How do I check a config file?", "top_k": 5}
            return await asyncio.gather(
                *(client.post("/v1/retrieve", json=body) for _ in range(12))
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 12
    results = {tuple(d["chunk_id"] for d in r.json()["data"]) for r in responses}
    assert len(results) == 1 and len(next(iter(results))) == 5

    assert len(rag_sources(url)) == 3


def test_hostile_input_through_handles_is_never_a_server_error(app, built):
    _, url = app
    routes = bases("tiny", pipeline="rag", embedder="minilm", reranker=None)
    assert server_errors(url, 7, 210, routes) == []
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def _replicas() -> dict[str, set[str]]:
    """Running Serve replica actors per deployment (``SERVE_REPLICA::app#deployment#id``)."""
    import ray

    found: dict[str, set[str]] = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"]
        if name.startswith("SERVE_REPLICA::llmserve#"):
            _, deployment, replica = name.split("#")
            found.setdefault(deployment, set()).add(replica)
    return found


def test_a_pipeline_top_k_swap_under_load_fails_nothing(app, built):
    """``llmserve deploy`` (its ``runtime.serve.deploy``) of the same config with the
    pipeline's top_k and top_n changed, while one client asks the pipeline and one the
    model back to back: nothing fails, only the router restarts, and the next answer
    cites as many sources as the new top_n."""
    from llmserve.runtime.serve import deploy

    config, url = app
    swapped = make_config(
        Path(config.retrievers[0].uri).parent, port=config.ingress.port, top_k=2, top_n=2
    )
    before = _replicas()

    async def scenario():
        stop = asyncio.Event()
        loads = [Traffic(url, model, clients=1, max_tokens=16) for model in ("rag", "tiny")]
        tasks = [asyncio.create_task(t.run(stop)) for t in loads]
        await asyncio.sleep(3)
        started = time.monotonic()
        await asyncio.to_thread(deploy, swapped, 600)
        seconds = time.monotonic() - started
        await asyncio.sleep(3)
        stop.set()
        await asyncio.gather(*tasks)
        return loads, seconds

    loads, seconds = asyncio.run(scenario())
    after = _replicas()
    print(f"\npipeline top_k 20 -> 2, top_n 3 -> 2 under load: deploy took {seconds:.0f} s")
    for t in loads:
        print(f"  {t.model}: {summary(t.outcomes)}")
    for t in loads:
        assert t.outcomes and all(ok(o) for o in t.outcomes), (t.model, summary(t.outcomes))
    assert after["rag-rag"].isdisjoint(before["rag-rag"])
    for unchanged in ("ingress", "llm-tiny", "embedder-minilm", "retriever-docs"):
        assert after[unchanged] == before[unchanged], unchanged
    assert len(rag_sources(url)) == 2
