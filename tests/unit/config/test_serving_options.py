from __future__ import annotations

import argparse
import sys

import pytest

from llmserve.config import load_config, validate_config_dict
from llmserve.config.serving_args import serving_option_hints
from llmserve.engine.args import build_engine_args
from llmserve.engine.serving import frontend_args
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit


def _model(engine_kwargs: dict | None = None, **serving: object) -> dict:
    model = {"id": "m", "source": "/srv/models/m", "serving": serving}
    if engine_kwargs:
        model["engine_kwargs"] = engine_kwargs
    return {"models": [model]}


def test_auto_tool_choice_with_hermes_loads() -> None:
    app = validate_config_dict(_model(enable_auto_tool_choice=True, tool_call_parser="hermes"))
    assert app.models[0].serving == {"enable_auto_tool_choice": True, "tool_call_parser": "hermes"}


def test_default_config_sets_a_tool_call_parser() -> None:
    # vLLM refuses named and "required" tool choice without one.
    assert load_config(CONFIGS / "default.yaml").models[0].serving["tool_call_parser"] == "hermes"


def test_unknown_tool_call_parser_is_refused_with_a_suggestion(issues) -> None:
    message = issues(_model(tool_call_parser="hermess"))["models[0].serving.tool_call_parser"]
    assert message.startswith("unknown tool_call_parser 'hermess' (did you mean 'hermes'?)")
    assert "llama3_json" in message  # lists what vLLM has


def test_unknown_reasoning_parser_is_refused(issues) -> None:
    message = issues(_model(reasoning_parser="qwen33"))["models[0].serving.reasoning_parser"]
    assert message.startswith("unknown reasoning_parser 'qwen33' (did you mean 'qwen3'?)")


def test_auto_tool_choice_needs_a_parser(issues) -> None:
    found = issues(_model(enable_auto_tool_choice=True))
    assert found == {
        "models[0].serving.enable_auto_tool_choice": (
            "enable_auto_tool_choice needs a tool_call_parser"
        )
    }


def test_unknown_option_is_named_with_a_suggestion(issues) -> None:
    found = issues(_model(tool_call_parsr="hermes"))
    assert found == {
        "models[0].serving.tool_call_parsr": (
            "unknown vLLM serving option 'tool_call_parsr' (did you mean 'tool_call_parser'?)"
        )
    }


def test_bad_value_type_is_reported_at_the_exact_path(issues) -> None:
    message = issues(_model(enable_prompt_tokens_details="maybe"))[
        "models[0].serving.enable_prompt_tokens_details"
    ]
    assert "invalid value for vLLM serving option 'enable_prompt_tokens_details'" in message
    assert "'maybe'" in message


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("host", "ingress.host"),
        ("port", "ingress.port"),
        ("api_key", "ingress.api_keys"),
        ("root_path", "ingress.route_prefix"),
    ],
)
def test_keys_llmserve_owns_point_to_the_config_field(issues, key: str, field: str) -> None:
    found = issues(_model(**{key: "x"}))
    message = f"'{key}' is set by llmserve; use '{field}' instead"
    assert found == {f"models[0].serving.{key}": message}


@pytest.mark.parametrize("key", ["ssl_keyfile", "ssl_certfile", "lora_modules", "tool_server"])
def test_options_without_per_model_meaning_are_refused_with_the_reason(issues, key) -> None:
    message = issues(_model(**{key: "x"}))[f"models[0].serving.{key}"]
    assert message.startswith(f"'{key}' cannot be set per model: ")


def test_http_server_options_are_refused(issues) -> None:
    message = issues(_model(uvicorn_log_level="debug"))["models[0].serving.uvicorn_log_level"]
    assert "llmserve's ingress is the HTTP server" in message


def test_missing_chat_template_file_is_refused(issues) -> None:
    message = issues(_model(chat_template="no/such/template.jinja"))[
        "models[0].serving.chat_template"
    ]
    assert "no/such/template.jinja" in message


def test_relative_chat_template_is_resolved_against_the_config_file(write_config) -> None:
    path = write_config(
        "models:\n  - id: m\n    source: builtin:tiny-llama\n"
        "    serving: {chat_template: t.jinja}\n"
    )
    (path.parent / "t.jinja").write_text("{{ messages[0]['content'] }}")
    assert load_config(path).models[0].serving["chat_template"] == str(path.parent / "t.jinja")


def test_reasoning_parser_set_twice_is_refused(issues) -> None:
    found = issues(_model({"reasoning_parser": "qwen3"}, reasoning_parser="qwen3"))
    assert list(found) == ["models[0].serving.reasoning_parser"]


def test_log_outputs_needs_log_requests(issues) -> None:
    found = issues(_model(enable_log_outputs=True))
    assert list(found) == ["models[0].serving.enable_log_outputs"]
    validate_config_dict(_model({"enable_log_requests": True}, enable_log_outputs=True))


def test_serving_block_reaches_vllm_like_serve_flags() -> None:
    from llmserve.compat.vllm import frontend_args_class

    frontend_cls = frontend_args_class()
    app = validate_config_dict(
        _model(
            tool_call_parser="hermes",
            enable_auto_tool_choice=True,
            response_role="bot",
            enable_prompt_tokens_details=True,
            reasoning_parser="qwen3",
        )
    )
    cfg = app.models[0]
    args = argparse.Namespace(**frontend_args(cfg, frontend_cls))
    assert args.tool_call_parser == "hermes"
    assert args.enable_auto_tool_choice is True
    assert args.response_role == "bot"
    assert args.enable_prompt_tokens_details is True
    assert args.port == frontend_cls().port  # everything else: vLLM's defaults
    assert not hasattr(args, "reasoning_parser")  # vLLM reads that from the engine args
    assert build_engine_args(cfg).reasoning_parser == "qwen3"


def test_embedders_have_no_serving_block(issues, rag_data) -> None:
    rag_data["embedders"][0]["serving"] = {"response_role": "x"}
    assert "embedders[0].serving" in issues(rag_data)


def test_serving_options_are_not_skipped_silently_without_vllm(monkeypatch, issues) -> None:
    for name in ("vllm", "vllm.engine", "vllm.engine.arg_utils"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import vllm...` fail
    serving_option_hints.cache_clear()
    try:
        found = issues(_model(response_role="x"))
    finally:
        monkeypatch.undo()
        serving_option_hints.cache_clear()
    assert found["models[0].serving"].startswith(
        "cannot check vLLM serving options: vLLM is not installed"
    )
