"""``models[].lora``: adapters as model ids, checked with the rest of the config."""

from __future__ import annotations

import pytest
import yaml

from llmserve.config import load_config, validate_config_dict
from llmserve.engine.args import build_engine_args
from llmserve.engine.serving import frontend_args

pytestmark = pytest.mark.unit


def _data(lora: dict, engine_kwargs: dict | None = None) -> dict:
    model = {"id": "m", "source": "/srv/models/m", "lora": lora}
    if engine_kwargs:
        model["engine_kwargs"] = engine_kwargs
    return {"models": [model, {"id": "other", "source": "/srv/models/o"}]}


def test_adapters_turn_lora_on_in_the_engine_and_the_frontend() -> None:
    app = validate_config_dict(
        _data({"adapters": {"m-sql": "org/sql-lora", "m-chat": "/srv/lora/chat"}, "max_loras": 2})
    )
    model = app.models[0]
    engine = build_engine_args(model)
    assert (engine.enable_lora, engine.max_loras, engine.max_lora_rank) == (True, 2, 16)
    modules = frontend_args(model, _frontend_cls())["lora_modules"]
    assert [(m.name, m.path, m.base_model_name) for m in modules] == [
        ("m-sql", "org/sql-lora", "m"),
        ("m-chat", "/srv/lora/chat", "m"),
    ]
    assert frontend_args(app.models[1], _frontend_cls())["lora_modules"] is None


def _frontend_cls():
    from llmserve.compat.vllm import frontend_args_class

    return frontend_args_class()


def test_an_adapter_folder_is_relative_to_the_config_file(tmp_path) -> None:
    (tmp_path / "adapters" / "sql").mkdir(parents=True)
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(_data({"adapters": {"m-sql": "adapters/sql", "m-hub": "o/x"}})))
    adapters = load_config(path).models[0].lora.adapters
    assert adapters == {"m-sql": str(tmp_path / "adapters" / "sql"), "m-hub": "o/x"}


def test_an_adapter_id_must_be_unique_among_served_ids(issues) -> None:
    found = issues(_data({"adapters": {"other": "/a", "m": "/b"}}))
    assert found == {
        "models[0].lora.adapters.other": "duplicate id 'other' (already a model id)",
        "models[0].lora.adapters.m": "duplicate id 'm' (already a model id)",
    }


def test_engine_lora_arguments_belong_to_the_lora_block(issues) -> None:
    found = issues(_data({"adapters": {"m-a": "/a"}}, engine_kwargs={"max_loras": 4}))
    assert found == {
        "models[0].engine_kwargs.max_loras": "'max_loras' is set by the lora block; remove it here"
    }


def test_lora_rank_is_one_vllm_accepts(issues) -> None:
    found = issues(_data({"adapters": {"m-a": "/a"}, "max_lora_rank": 12}))
    assert list(found) == ["models[0].lora.max_lora_rank"]


def test_serving_lora_modules_points_to_the_lora_block(issues) -> None:
    data = {"models": [{"id": "m", "source": "/m", "serving": {"lora_modules": ["a=/a"]}}]}
    message = issues(data)["models[0].serving.lora_modules"]
    assert "lora block" in message


def test_adapters_are_optional_and_none_means_no_lora() -> None:
    app = validate_config_dict({"models": [{"id": "m", "source": "/srv/models/m"}]})
    assert app.models[0].lora is None
    assert build_engine_args(app.models[0]).enable_lora is False


def test_a_pipeline_may_rewrite_queries_with_its_generator_or_one_of_its_adapters(
    rag_data, issues
) -> None:
    rag_data["models"][0]["lora"] = {"adapters": {"gen-rewriter": "/srv/lora/rw"}}
    rag_data["models"].append({"id": "other", "source": "/srv/models/o"})
    for name in ("gen", "gen-rewriter", None):
        rag_data["pipelines"][0]["rewrite_model"] = name
        assert validate_config_dict(rag_data).pipelines[0].rewrite_model == name
    rag_data["pipelines"][0]["rewrite_model"] = "other"
    assert issues(rag_data) == {
        "pipelines[0].rewrite_model": "rewrite_model 'other' must be the generator 'gen' "
        "or one of its LoRA adapters"
    }
