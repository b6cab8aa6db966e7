"""``/v1/models`` cards: what a model's ``root`` shows, never a path on the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmserve.builder.app import build_app
from llmserve.builder.cards import public_root
from llmserve.compat.ray import bound_deployment
from llmserve.config import validate_config_dict

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("builtin:tiny-llama", "builtin:tiny-llama"),  # the configured name, not its folder
        ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),  # HF id
        ("gpt2", "gpt2"),
        ("/srv/models/llama-3-8b", "llama-3-8b"),
        ("/srv/models/llama-3-8b/", "llama-3-8b"),
        ("./models/qwen", "qwen"),
        ("~/models/qwen", "qwen"),
        ("../weights/a/b/mistral", "mistral"),
        ("/", "the-id"),
    ],
)
def test_root_shows_a_name_never_a_server_path(source: str, shown: str) -> None:
    assert public_root(source, "the-id") == shown


def test_an_existing_local_folder_shows_its_name_even_when_it_looks_like_a_hub_id(
    tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert public_root("org/name", "m") == "name"


def test_the_built_apps_cards_hold_no_server_path(tmp_path: Path) -> None:
    adapter = tmp_path / "adapters" / "tiny-a"
    adapter.mkdir(parents=True)
    data = {
        "models": [
            {
                "id": "local",
                "source": str(tmp_path / "weights" / "llama"),
                "device": "cpu",
                "lora": {"adapters": {"tiny-a": "adapters/tiny-a", "hub-b": "org/lora-b"}},
            },
            {"id": "tiny", "source": "builtin:tiny-llama", "device": "cpu"},
        ],
        "embedders": [{"id": "emb", "source": "/opt/models/minilm", "device": "cpu"}],
        "rerankers": [{"id": "rr", "source": "BAAI/bge-reranker-base", "device": "cpu"}],
    }
    for fused in (None, "local"):
        config = validate_config_dict({**data, "ingress": {"fused_model": fused}}, tmp_path)
        assert config.models[0].lora.adapters["tiny-a"] == str(adapter)  # made absolute
        routes = bound_deployment(build_app(config)).init_args[1]
        roots = {id_: route.card["root"] for id_, route in routes.routes.items()}
        assert roots == {
            "local": "llama",
            "tiny-a": "tiny-a",
            "hub-b": "org/lora-b",
            "tiny": "builtin:tiny-llama",
            "emb": "minilm",
            "rr": "BAAI/bge-reranker-base",
        }
        cards = str([route.card for route in routes.routes.values()])
        assert str(tmp_path) not in cards and "/opt/" not in cards
