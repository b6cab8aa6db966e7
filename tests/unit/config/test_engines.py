"""``AppConfig.engines``: the one list of an app's vLLM engines, with their YAML paths."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from llmserve.config import AppConfig, ConfigError, EngineConfig, validate_config_dict
from llmserve.config.app import ENGINE_SECTIONS

pytestmark = pytest.mark.unit


def _item_type(section: str) -> Any:
    [item] = typing.get_args(AppConfig.model_fields[section].annotation)
    return item


def test_the_engine_sections_are_the_sections_of_engine_configs() -> None:
    engine_lists = [
        name
        for name, field in AppConfig.model_fields.items()
        if typing.get_origin(field.annotation) is list
        and issubclass(_item_type(name), EngineConfig)
    ]
    assert list(ENGINE_SECTIONS) == engine_lists


def test_every_engine_in_config_order(rag_data: dict[str, Any]) -> None:
    rag_data["models"].append({"id": "gen2", "source": "org/m"})
    config = validate_config_dict(rag_data)
    engines = config.engines()
    assert [(e.path, e.config.id) for e in engines] == [
        ("models[0]", "gen"),
        ("models[1]", "gen2"),
        ("embedders[0]", "emb"),
        ("rerankers[0]", "rr"),
    ]
    assert all(getattr(config, e.section)[e.index] is e.config for e in engines)


def test_an_engine_path_is_where_config_errors_point(rag_data: dict[str, Any]) -> None:
    engines = validate_config_dict(rag_data).engines()
    for engine in engines:
        rag_data[engine.section][engine.index]["engine_kwargs"] = {"nonsense_arg": 1}
    with pytest.raises(ConfigError) as info:
        validate_config_dict(rag_data)
    paths = [issue.path for issue in info.value.issues]
    assert paths == [f"{e.path}.engine_kwargs.nonsense_arg" for e in engines]
