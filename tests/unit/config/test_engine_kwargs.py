from __future__ import annotations

import sys

import pytest

from llmserve.config import validate_config_dict
from llmserve.config.engine_args import engine_arg_hints

pytestmark = pytest.mark.unit


def _model(**engine_kwargs: object) -> dict:
    return {"models": [{"id": "m", "source": "builtin:tiny-llama", "engine_kwargs": engine_kwargs}]}


def test_known_kwargs_pass_and_scalars_are_coerced() -> None:
    app = validate_config_dict(
        _model(dtype="float32", max_model_len="4096", enforce_eager=True, seed=0)
    )
    assert app.models[0].engine_kwargs == {
        "dtype": "float32",
        "max_model_len": 4096,
        "enforce_eager": True,
        "seed": 0,
    }


def test_structured_kwargs_are_checked_but_kept_as_written() -> None:
    app = validate_config_dict(_model(compilation_config={"mode": 0}, hf_overrides={"a": 1}))
    assert app.models[0].engine_kwargs["compilation_config"] == {"mode": 0}


def test_enum_names_are_not_rejected() -> None:
    # vLLM accepts enum members by name although their values are class paths.
    validate_config_dict(_model(attention_backend="CPU_ATTN"))


def test_unknown_key_is_named_with_a_suggestion(issues) -> None:
    found = issues(_model(max_modl_len=512))
    message = found["models[0].engine_kwargs.max_modl_len"]
    assert "unknown vLLM engine argument 'max_modl_len'" in message
    assert "did you mean 'max_model_len'" in message


def test_unknown_key_without_close_match(issues) -> None:
    found = issues(_model(zzzzzz=1))
    assert found == {"models[0].engine_kwargs.zzzzzz": "unknown vLLM engine argument 'zzzzzz'"}


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("model", "source"),
        ("served_model_name", "id"),
        ("tensor_parallel_size", "parallelism.tensor_parallel_size"),
        ("pipeline_parallel_size", "parallelism.pipeline_parallel_size"),
        ("distributed_executor_backend", "device"),
    ],
)
def test_owned_key_points_to_the_config_field(issues, key: str, field: str) -> None:
    found = issues(_model(**{key: 2}))
    assert found == {
        f"models[0].engine_kwargs.{key}": f"'{key}' is set by llmserve; use '{field}' instead"
    }


def test_bad_value_type_is_reported_at_the_exact_path(issues) -> None:
    found = issues(_model(max_model_len="abc"))
    assert list(found) == ["models[0].engine_kwargs.max_model_len"]
    message = found["models[0].engine_kwargs.max_model_len"]
    assert "max_model_len" in message
    assert "valid integer" in message
    assert "'abc'" in message


def test_bad_literal_value(issues) -> None:
    message = issues(_model(dtype="float64"))["models[0].engine_kwargs.dtype"]
    assert "'float32'" in message  # lists what is allowed


def test_nested_error_inside_a_vllm_config_object(issues) -> None:
    message = issues(_model(compilation_config={"mode": "fast"}))[
        "models[0].engine_kwargs.compilation_config"
    ]
    assert message.startswith("invalid value for vLLM engine argument 'compilation_config': mode:")


def test_every_bad_key_is_reported(issues) -> None:
    found = issues(_model(max_model_len="abc", model="x", nope=1, dtype="float32"))
    assert sorted(found) == [
        "models[0].engine_kwargs.max_model_len",
        "models[0].engine_kwargs.model",
        "models[0].engine_kwargs.nope",
    ]


def test_engine_kwargs_of_rag_components_are_checked(issues, rag_data) -> None:
    rag_data["embedders"][0]["engine_kwargs"] = {"max_model_len": "x"}
    rag_data["rerankers"][0]["engine_kwargs"] = {"served_model_name": "y"}
    assert sorted(issues(rag_data)) == [
        "embedders[0].engine_kwargs.max_model_len",
        "rerankers[0].engine_kwargs.served_model_name",
    ]


def test_engine_kwargs_are_not_skipped_silently_without_vllm(monkeypatch, issues) -> None:
    for name in ("vllm", "vllm.engine", "vllm.engine.arg_utils"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import vllm...` fail
    engine_arg_hints.cache_clear()
    try:
        found = issues({"models": [{"id": "m", "source": "x", "engine_kwargs": {"dtype": "x"}}]})
    finally:
        monkeypatch.undo()
        engine_arg_hints.cache_clear()
    assert list(found) == ["models[0].engine_kwargs"]
    assert found["models[0].engine_kwargs"].startswith(
        "cannot check vLLM engine arguments: vLLM is not installed"
    )
