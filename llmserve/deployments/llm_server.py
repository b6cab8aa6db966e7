"""LLM server deployment: one per configured model, owning a vLLM ``AsyncLLM``.

Requests arrive from the ingress as plain JSON dicts (cheap to pickle) and
are answered by vLLM's own ``OpenAIServingChat`` / ``OpenAIServingCompletion``.
Each method is an async generator, called through a streaming handle:

- the first item is a ``dict`` for a complete JSON answer (a response or an
  OpenAI-shaped error), or
- a sequence of ``str`` SSE events exactly as vLLM renders them
  (``"data: {...}\\n\\n"``), ending with ``"data: [DONE]\\n\\n"``.

Each event is yielded the moment vLLM produces it: there is no timer. When
the consumer is slower than the engine, vLLM's output collector merges the
pending deltas into one event, so batching adapts to load by itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from llmserve.deployments import metrics
from llmserve.engine.requests import parse_request, vllm_error
from llmserve.engine.serving import start_engine
from llmserve.openai.errors import APIError, error_body, unavailable

logger = logging.getLogger("llmserve")

_ERROR_EVENT = 'data: {"error"'


class LLMServer:
    """Serves one model. Its Serve health check is the engine's health check."""

    async def __init__(self, model, home: str | None = None):
        # Serve awaits an async constructor; start the engine before serving.
        await self._start(model, home)

    @classmethod
    async def create(cls, model, home: str | None = None) -> LLMServer:
        """An LLM server in this process (the ingress uses it for its fused model)."""
        server = cls.__new__(cls)
        await server._start(model, home)
        return server

    async def _start(self, model, home: str | None) -> None:
        self.model_id = model.id
        bundle = await start_engine(model, Path(home) if home else None)
        self._engine = bundle.engine
        self._chat = bundle.state.openai_serving_chat
        self._completion = bundle.state.openai_serving_completion

    async def chat(self, body: dict[str, Any]) -> AsyncGenerator[dict | str, None]:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        if not isinstance(body.get("messages"), list):
            yield error_body(400, "messages must be a list of chat messages", param="messages")
            return
        async for item in self._serve(
            ChatCompletionRequest, body, self._chat.create_chat_completion
        ):
            yield item

    async def completions(self, body: dict[str, Any]) -> AsyncGenerator[dict | str, None]:
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        async for item in self._serve(CompletionRequest, body, self._completion.create_completion):
            yield item

    async def _serve(self, request_cls, body, create) -> AsyncGenerator[dict | str, None]:
        request, error = parse_request(request_cls, body)
        if error is not None:
            yield error
            return
        if self._engine.errored:
            yield self._unavailable().body()
            return
        try:
            result = await create(request, None)
        except Exception as exc:  # vLLM raises some request errors instead of returning them
            yield self._unavailable().body() if self._engine.errored else vllm_error(exc)
            return
        if not isinstance(result, AsyncGenerator):
            answer = result.model_dump()
            # vLLM reports a dead engine as a 500; it is the retryable 503.
            yield (
                self._unavailable().body() if "error" in answer and self._engine.errored else answer
            )
            return
        # A cancelled handle call (client gone) closes this generator, which
        # makes vLLM abort the request and free its KV cache.
        async for event in result:
            # vLLM ends a stream whose engine died with a 500 error event.
            if event.startswith(_ERROR_EVENT) and self._engine.errored:
                raise self._unavailable()
            yield event

    def _unavailable(self) -> APIError:
        logger.error(
            "model %s: the vLLM engine is dead; Serve will replace the replica", self.model_id
        )
        return unavailable(self.model_id)

    async def metrics_text(self) -> metrics.ReplicaMetrics:
        """This replica's Prometheus metrics, including vLLM's ``vllm:*`` engine metrics."""
        return metrics.replica_exposition()

    async def check_health(self) -> None:
        # Raising here makes Serve replace the replica.
        await self._engine.check_health()
