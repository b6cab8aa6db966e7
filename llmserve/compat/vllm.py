"""vLLM internals llmserve relies on: its API server's private wiring.

llmserve answers requests with vLLM's own serving classes, without vLLM's
HTTP server. Building those classes, reading them back and reproducing what
vLLM's routers do around them uses modules of vLLM's server that are not a
public API (``vllm.entrypoints.launchers``, ``vllm.entrypoints.serve.
exception_handling``, a router's private helper). Each such use is here; the
canaries are in ``tests/unit/compat/test_vllm.py``.

vLLM's protocol models (``ChatCompletionRequest``, ...) and ``AsyncLLM``'s
engine-client methods are the public API and are used directly elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import AsyncGenerator, Collection, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from pydantic import BaseModel
    from starlette.datastructures import State
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import FrontendArgs
    from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
    from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.entrypoints.openai.responses.protocol import StreamingResponsesResponse
    from vllm.entrypoints.openai.responses.serving import OpenAIServingResponses
    from vllm.entrypoints.pooling.embed.serving import ServingEmbedding
    from vllm.entrypoints.pooling.scoring.serving import ServingScores
    from vllm.entrypoints.serve.tokenize.serving import ServingTokenization
    from vllm.v1.engine.async_llm import AsyncLLM


# -- the serving objects ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServingState:
    """vLLM's serving objects for one engine, read once from its app state.

    A field is None when the engine does not do that task (a pooling model has
    no ``chat``; a generative one no ``embedding``); vLLM sets it to None then.
    """

    chat: OpenAIServingChat | None
    completion: OpenAIServingCompletion | None
    responses: OpenAIServingResponses | None
    tokenization: ServingTokenization
    models: OpenAIServingModels
    embedding: ServingEmbedding | None
    scores: ServingScores | None


# ServingState field -> the attribute vLLM's ``init_app_state`` sets on the app
# state, by the initializer that sets it. vLLM runs the generate initializer
# only when the engine supports "generate", the pooling one only when it
# supports a pooling task (``vllm/entrypoints/launchers/api_server/app_state.py``).
ALWAYS_SET: Final = {"models": "openai_serving_models", "tokenization": "serving_tokenization"}
SET_FOR_GENERATE: Final = {
    "chat": "openai_serving_chat",
    "completion": "openai_serving_completion",
    "responses": "openai_serving_responses",
}
SET_FOR_POOLING: Final = {"embedding": "serving_embedding", "scores": "serving_scores"}
_MISSING: Final = object()


def serving_namespace(
    frontend: Mapping[str, Any], engine_args: AsyncEngineArgs
) -> argparse.Namespace:
    """The ``args`` vLLM's API server builds from ``vllm serve``'s flags: the
    frontend options (``FrontendArgs``) and the engine arguments in one namespace."""
    return argparse.Namespace(**(dict(frontend) | vars(engine_args)))


async def init_serving(engine: AsyncLLM, args: argparse.Namespace) -> ServingState:
    """Build vLLM's serving objects on ``engine`` exactly as its API server does
    (``init_app_state``, the same defaults), and read them into a ``ServingState``."""
    from starlette.datastructures import State
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    supported_tasks = await engine.get_supported_tasks()
    state = State()
    await init_app_state(engine, state, args, supported_tasks=supported_tasks)
    return read_serving_state(state, supported_tasks)


def read_serving_state(state: State, supported_tasks: Collection[str]) -> ServingState:
    """The serving objects ``init_app_state`` put on ``state``.

    An attribute vLLM should have set but did not means vLLM renamed it: that
    fails here, when the engine starts, not at the first request.
    """
    from vllm.tasks import POOLING_TASKS

    expected = dict(ALWAYS_SET)
    if "generate" in supported_tasks:
        expected |= SET_FOR_GENERATE
    if any(task in POOLING_TASKS for task in supported_tasks):
        expected |= SET_FOR_POOLING
    values: dict[str, Any] = {}
    for field, attribute in (ALWAYS_SET | SET_FOR_GENERATE | SET_FOR_POOLING).items():
        value = getattr(state, attribute, _MISSING)
        if value is _MISSING:
            if field in expected:
                raise RuntimeError(
                    f"vLLM's init_app_state set no '{attribute}' for an engine with tasks "
                    f"{sorted(supported_tasks)}; update llmserve/compat/vllm.py for this vLLM"
                )
            value = None
        values[field] = value
    return ServingState(**values)


def loaded_lora_adapters(models: OpenAIServingModels) -> dict[str, str]:
    """The LoRA adapters loaded into the engine, ``{name: path}``.

    ``OpenAIServingModels`` keeps them in ``lora_requests``; it has no other
    accessor short of building the ``/v1/models`` answer.
    """
    return {name: request.lora_path for name, request in models.lora_requests.items()}


def pooling_engine(serving: ServingEmbedding | ServingScores) -> Any:
    """The engine client a pooling serving object starts its engine requests on.

    vLLM's pooling serving (``PoolingBaseServing._prepare_generators``) calls
    ``self.engine_client.encode(request_id=..., ...)`` once per input.
    """
    return serving.engine_client


def set_pooling_engine(serving: ServingEmbedding | ServingScores, engine: Any) -> None:
    """Have ``serving`` start its engine requests on ``engine`` (a wrapper of its own)."""
    serving.engine_client = engine


# -- vLLM's server flags -----------------------------------------------------------


def frontend_args_class() -> type[FrontendArgs]:
    """vLLM's dataclass of ``vllm serve``'s frontend flags (its fields and defaults).

    Raises ImportError without vLLM.
    """
    from vllm.entrypoints.launchers.cli_args import FrontendArgs

    return FrontendArgs


def per_model_frontend_options() -> frozenset[str]:
    """The frontend flags that configure serving a model rather than vLLM's HTTP
    server: vLLM keeps those in ``BaseFrontendArgs``, the base of ``FrontendArgs``."""
    from vllm.entrypoints.launchers.cli_args import BaseFrontendArgs

    return frozenset(f.name for f in dataclasses.fields(BaseFrontendArgs))


def check_chat_template(value: str) -> None:
    """Raise unless ``value`` is a template, an existing file or one of vLLM's
    built-in templates, as ``vllm serve --chat-template`` checks it."""
    from vllm.renderers.chat_utils import validate_chat_template

    validate_chat_template(value)


# -- what vLLM's routers do around the serving objects ------------------------------


def responses_sse_events(
    events: AsyncGenerator[StreamingResponsesResponse, None],
) -> AsyncGenerator[str, None]:
    """Responses API stream events as typed SSE events (``event: <type>``,
    ``data: <json by alias>``), written exactly as vLLM's router writes them."""
    from vllm.entrypoints.openai.responses.api_router import _convert_stream_to_sse_events

    return _convert_stream_to_sse_events(events)


def error_response_body(exc: Exception) -> dict[str, Any]:
    """An exception from vLLM's serving layer as the error body vLLM's own server
    sends for it: status, OpenAI error type, message and ``param``."""
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    return create_error_response(exc).model_dump()


def error_param(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the dotted ``param`` vLLM reports, without
    the validator wrappers' own segments (``function-wrap[...]``)."""
    from vllm.entrypoints.serve.exception_handling.handlers.validation import (
        clean_loc_for_param,
    )

    return clean_loc_for_param(loc)


# -- request models ------------------------------------------------------------------


def completion_request_fields() -> frozenset[str]:
    """The body keys vLLM's ``CompletionRequest`` declares (fields and aliases)."""
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return _body_keys(CompletionRequest)


def chat_completion_request_fields() -> frozenset[str]:
    """The body keys vLLM's ``ChatCompletionRequest`` declares (fields and aliases)."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return _body_keys(ChatCompletionRequest)


def _body_keys(model: type[BaseModel]) -> frozenset[str]:
    keys = set(model.model_fields)
    keys |= {f.alias for f in model.model_fields.values() if f.alias}
    return frozenset(keys)
