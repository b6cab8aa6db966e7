"""Canaries for the vLLM internals in llmserve/compat/vllm.py.

Each test fails when vLLM changes what llmserve relies on; the tests named
``..._can_fail`` show that the check behind a canary reports a change of
that kind, so a canary cannot pass vacuously.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import importlib.util
import inspect
import json
import sys
import textwrap
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import State

from llmserve.compat import vllm as vllm_compat
from llmserve.config.serving_args import OWNED_SERVING_OPTIONS, UNSUPPORTED_SERVING_OPTIONS

pytestmark = pytest.mark.unit


# -- init_app_state: what it reads from args, what it sets on the state --------------


def _calls_with(fn: Callable[..., Any], names: set[str]) -> list[Callable[..., Any]]:
    """The functions ``fn`` calls with one of ``names`` as an argument, resolved
    through ``fn``'s module and the imports in its body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    module = sys.modules[fn.__module__]
    imported: dict[str, tuple[str, str]] = {}  # local name -> (module, attribute)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = importlib.util.resolve_name(
                "." * node.level + (node.module or ""), module.__package__
            )
            for alias in node.names:
                imported[alias.asname or alias.name] = (source, alias.name)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        arguments = [*node.args, *(k.value for k in node.keywords)]
        if any(isinstance(a, ast.Name) and a.id in names for a in arguments):
            if node.func.id in imported:
                source, attribute = imported[node.func.id]
                target = getattr(importlib.import_module(source), attribute)
            else:
                target = getattr(module, node.func.id, None)
            if inspect.isfunction(target) and target.__module__.startswith("vllm."):
                found.append(target)
    return found


def _init_functions() -> list[Callable[..., Any]]:
    """``init_app_state`` and every vLLM function it hands ``args`` or ``state`` to."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    functions, todo = [], [init_app_state]
    while todo:
        fn = todo.pop()
        if fn not in functions:
            functions.append(fn)
            todo.extend(_calls_with(fn, {"args", "state"}))
    return functions


def _attributes(fn: Callable[..., Any], name: str, ctx: type[ast.expr_context]) -> set[str]:
    """Attributes of the variable ``name`` that ``fn`` reads (Load) or sets (Store)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == name
        and isinstance(node.ctx, ctx)
    }


def _args_read_but_not_in(namespace: set[str]) -> set[str]:
    return {a for fn in _init_functions() for a in _attributes(fn, "args", ast.Load)} - namespace


def _state_attributes_not_set(attributes: set[str]) -> set[str]:
    return attributes - {a for fn in _init_functions() for a in _attributes(fn, "state", ast.Store)}


@pytest.fixture(scope="module")
def namespace() -> set[str]:
    """The names in the namespace llmserve hands init_app_state."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    frontend_cls = vllm_compat.frontend_args_class()
    frontend = {f.name: getattr(frontend_cls(), f.name) for f in dataclasses.fields(frontend_cls)}
    args = vllm_compat.serving_namespace(frontend, AsyncEngineArgs(model="/models/m"))
    return set(vars(args))


def test_the_initializers_are_found() -> None:
    names = {fn.__name__ for fn in _init_functions()}
    assert {"init_app_state", "init_generate_state", "init_pooling_state"} <= names


def test_init_app_state_reads_only_what_the_hand_built_namespace_has(namespace) -> None:
    """vLLM builds ``args`` with its argument parser; llmserve builds it from
    ``FrontendArgs`` and ``AsyncEngineArgs``. A flag only the parser adds fails here."""
    assert _args_read_but_not_in(namespace) == set()


def test_the_namespace_check_can_fail(namespace) -> None:
    assert _args_read_but_not_in(namespace - {"chat_template"}) == {"chat_template"}


def test_init_app_state_still_takes_engine_state_args_and_tasks() -> None:
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    inspect.signature(init_app_state).bind(None, State(), SimpleNamespace(), supported_tasks=())


def test_vllm_sets_every_app_state_attribute_servingstate_reads() -> None:
    groups = vllm_compat.ALWAYS_SET | vllm_compat.SET_FOR_GENERATE | vllm_compat.SET_FOR_POOLING
    assert set(groups) == {f.name for f in dataclasses.fields(vllm_compat.ServingState)}
    assert _state_attributes_not_set(set(groups.values())) == set()


def test_the_app_state_check_can_fail() -> None:
    assert _state_attributes_not_set({"openai_serving_chat", "chat"}) == {"chat"}


def _state(**attributes: object) -> State:
    state = State()
    for name, value in attributes.items():
        setattr(state, name, value)
    return state


GENERATE = {
    "openai_serving_models": "models",
    "serving_tokenization": "tokenization",
    "openai_serving_chat": "chat",
    "openai_serving_completion": "completion",
    "openai_serving_responses": "responses",
}


def test_a_generative_engines_state_is_read_once_into_typed_fields() -> None:
    serving = vllm_compat.read_serving_state(_state(**GENERATE), ("generate",))
    assert (serving.chat, serving.completion, serving.responses) == (
        "chat",
        "completion",
        "responses",
    )
    assert (serving.models, serving.tokenization) == ("models", "tokenization")
    assert (serving.embedding, serving.scores) == (None, None)  # vLLM set no pooling objects


def test_a_pooling_engines_state_has_no_chat() -> None:
    state = _state(
        openai_serving_models="models",
        serving_tokenization="tokenization",
        serving_embedding="embedding",
        serving_scores=None,
    )
    serving = vllm_compat.read_serving_state(state, ("embed",))
    assert (serving.embedding, serving.scores, serving.chat) == ("embedding", None, None)


def test_an_attribute_vllm_no_longer_sets_fails_when_the_engine_starts() -> None:
    renamed = {k: v for k, v in GENERATE.items() if k != "openai_serving_chat"}
    with pytest.raises(RuntimeError, match="no 'openai_serving_chat'.*compat/vllm.py"):
        vllm_compat.read_serving_state(_state(**renamed, serving_chat="chat"), ("generate",))


# -- vLLM's frontend flags ----------------------------------------------------------------


def test_frontend_args_is_the_dataclass_of_vllm_serves_frontend_flags() -> None:
    frontend_cls = vllm_compat.frontend_args_class()
    fields = {f.name for f in dataclasses.fields(frontend_cls)}
    # The flags llmserve names: refused ones, and the ones engine/serving.py sets.
    named = {*OWNED_SERVING_OPTIONS, *UNSUPPORTED_SERVING_OPTIONS, "lora_modules"}
    named |= {"tool_parser_plugin", "chat_template", "tool_call_parser", "response_role"}
    assert named - fields == set()


def test_the_per_model_flags_are_the_model_serving_ones() -> None:
    per_model = vllm_compat.per_model_frontend_options()
    fields = {f.name for f in dataclasses.fields(vllm_compat.frontend_args_class())}
    assert per_model < fields
    assert {"chat_template", "tool_call_parser", "response_role"} <= per_model
    # vLLM's HTTP server's own flags stay out of the base class.
    assert {"host", "port", "api_key", "root_path", "ssl_keyfile"} & per_model == set()


def test_a_chat_template_is_checked_as_vllm_serve_checks_it(tmp_path) -> None:
    vllm_compat.check_chat_template("{{ messages }}")
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    vllm_compat.check_chat_template(str(template))
    with pytest.raises(Exception, match="doesn't exist"):
        vllm_compat.check_chat_template(str(tmp_path / "missing.jinja"))


# -- what vLLM's routers do ------------------------------------------------------------------


def test_responses_events_are_written_as_typed_sse_events() -> None:
    from openai.types.responses import ResponseTextDeltaEvent

    event = ResponseTextDeltaEvent(
        type="response.output_text.delta",
        item_id="msg_1",
        output_index=0,
        content_index=0,
        delta="Hel",
        logprobs=[],
        sequence_number=3,
    )

    async def events():
        yield event

    async def written() -> list[str]:
        return [e async for e in vllm_compat.responses_sse_events(events())]

    [text] = asyncio.run(written())
    head, data = text.split("\n", 1)
    assert head == "event: response.output_text.delta"
    assert data.startswith("data: ") and data.endswith("\n\n") and "\n" not in data[:-2]
    assert json.loads(data[len("data: ") :]) == event.model_dump(mode="json", by_alias=True)


@pytest.mark.parametrize(
    ("exc", "code", "type_", "param"),
    [
        (ValueError("bad value"), 400, "BadRequestError", None),
        (NotImplementedError("no"), 501, "NotImplementedError", None),
        (RuntimeError("boom"), 500, "InternalServerError", None),
    ],
)
def test_an_exception_becomes_vllms_error_body(exc, code, type_, param) -> None:
    error = vllm_compat.error_response_body(exc)["error"]
    assert (error["code"], error["type"], error["param"]) == (code, type_, param)
    assert error["message"] == str(exc)


def test_a_vllm_validation_error_names_its_parameter() -> None:
    from vllm.exceptions import VLLMValidationError

    error = vllm_compat.error_response_body(VLLMValidationError("too hot", parameter="t"))
    assert (error["error"]["code"], error["error"]["param"]) == (400, "t")


def test_error_locations_lose_the_validators_wrapper_segments() -> None:
    from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest

    with pytest.raises(ValidationError) as info:
        TypeAdapter(EmbeddingRequest).validate_python({"model": "m", "input": 5})
    locs = [tuple(e["loc"]) for e in info.value.errors()]
    assert any(str(part).startswith("function-wrap[") for loc in locs for part in loc)
    params = {vllm_compat.error_param(loc) for loc in locs}
    # "input" of the plain request; "messages" of its chat-style union branch
    assert params == {"input", "messages"}


# -- LoRA adapters ---------------------------------------------------------------------------


class _Engine:
    """The engine-client parts ``OpenAIServingModels`` uses for LoRA adapters."""

    model_config = renderer = input_processor = None

    async def add_lora(self, request: object) -> bool:
        return True

    async def remove_lora(self, lora_id: int) -> bool:
        return True


def test_loaded_lora_adapters_follow_load_and_unload() -> None:
    from vllm.entrypoints.openai.models.protocol import BaseModelPath
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.entrypoints.serve.lora.protocol import (
        LoadLoRAAdapterRequest,
        UnloadLoRAAdapterRequest,
    )

    models = OpenAIServingModels(_Engine(), [BaseModelPath(name="m", model_path="/m")])

    async def run() -> list[dict[str, str]]:
        seen = [vllm_compat.loaded_lora_adapters(models)]
        await models.load_lora_adapter(LoadLoRAAdapterRequest(lora_name="a", lora_path="/a"), "m")
        seen.append(vllm_compat.loaded_lora_adapters(models))
        await models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name="a"))
        seen.append(vllm_compat.loaded_lora_adapters(models))
        return seen

    assert asyncio.run(run()) == [{}, {"a": "/a"}, {}]


# -- request models ---------------------------------------------------------------------------


def test_request_fields_are_the_body_keys_of_vllms_request_models() -> None:
    completion = vllm_compat.completion_request_fields()
    chat = vllm_compat.chat_completion_request_fields()
    assert {"prompt", "max_tokens", "bad_words", "allowed_token_ids", "vllm_xargs"} <= completion
    assert {"messages", "max_completion_tokens", "bad_words"} <= chat
    assert "messages" not in completion and "prompt" not in chat
    assert "field_names" not in completion  # a class variable, not a field
