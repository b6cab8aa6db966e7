"""models.prepare: the built-in models a config's engines use, prepared before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmserve.models.prepare as prepare
from llmserve.config import validate_config_dict
from llmserve.models import BUILTIN_PREFIX, builtin_models, prepare_models

pytestmark = pytest.mark.unit


def _config(tmp_path: Path):
    return validate_config_dict(
        {
            "home": str(tmp_path),
            "models": [
                {"id": "a", "source": f"{BUILTIN_PREFIX}tiny-llama"},
                {"id": "b", "source": "org/not-builtin"},
                {"id": "c", "source": f"{BUILTIN_PREFIX}tiny-llama"},
            ],
            "embedders": [{"id": "e", "source": f"{BUILTIN_PREFIX}all-minilm-l6-v2"}],
            "rerankers": [{"id": "r", "source": f"{BUILTIN_PREFIX}smollm2-135m-instruct"}],
        }
    )


def test_the_builtins_of_every_engine_once(tmp_path: Path) -> None:
    # One from each engine section, each once, sorted; "org/not-builtin" is not one.
    assert builtin_models(_config(tmp_path)) == [
        "all-minilm-l6-v2",
        "smollm2-135m-instruct",
        "tiny-llama",
    ]


def test_prepare_models_prepares_each_into_the_configs_home(tmp_path: Path, monkeypatch) -> None:
    prepared = []
    monkeypatch.setattr(
        prepare, "prepare_builtin", lambda name, home: prepared.append((name, home))
    )
    config = _config(tmp_path)
    prepare_models(config)
    assert prepared == [(name, tmp_path) for name in builtin_models(config)]
