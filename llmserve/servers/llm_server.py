"""LLM server deployment: one per configured model, owning a vLLM ``AsyncLLM``.

Requests arrive from the ingress as plain JSON dicts (cheap to pickle) on
``respond`` (``servers/protocol.py``: the endpoints, the items, the error
convention) and are answered by vLLM's own serving classes
(``OpenAIServingChat``, ``OpenAIServingCompletion``, ``OpenAIServingResponses``,
``ServingTokenization``): a whole JSON answer, or the SSE events exactly as
vLLM renders them.

Each event is yielded the moment vLLM produces it: there is no timer. When
the consumer is slower than the engine, vLLM's output collector merges the
pending deltas into one event, so batching adapts to load by itself.

When the engine dies, requests get 503 (in-flight streams an SSE error
event), never vLLM's 500. What happens next depends on where the server runs:

- as its own Serve deployment, the replica exits, so that Serve's router
  stops choosing it at once (a replica that answers 503 instantly would look
  like the least busy one) and the controller starts a replacement;
- inside the ingress (the fused model), the engine is restarted in place:
  the ingress replica keeps answering ``/health`` and other models, and
  with several ingress replicas HAProxy retries the 503 on another one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmserve.compat.vllm import loaded_lora_adapters, responses_sse_events
from llmserve.engine.requests import parse_request, raw_request, vllm_error
from llmserve.engine.serving import start_engine
from llmserve.observability import metrics
from llmserve.openai import sse
from llmserve.openai.errors import APIError, error_body, unavailable
from llmserve.openai.protocol import chat_messages
from llmserve.servers.protocol import (
    NO_META,
    VLLM_PRIORITY,
    Body,
    Endpoint,
    Item,
    RequestMeta,
)

logger = logging.getLogger("llmserve")

_WATCH_PERIOD_S = 0.5
# The endpoints whose vLLM requests take a scheduling priority.
_PRIORITIZED = frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES})
_RESTART_ATTEMPTS = 3
_EXIT_DELAY_S = 0.5


@dataclass(frozen=True)
class _Handler:
    request_type: Any
    """vLLM's request model for the endpoint."""
    create: Callable[[Any, Any], Awaitable[Any]]
    """vLLM's serving method: ``(request, raw_request)`` -> a response or an event stream."""
    by_alias: bool = False


class LLMServer:
    """Serves one model. Its Serve health check is the engine's health check."""

    _by_priority = False
    """Its engine runs ``scheduling_policy: priority`` (set at start)."""

    async def __init__(self, model, home: str | None = None):  # type: ignore[misc]  # Serve awaits it
        # Serve awaits an async constructor; start the engine before serving.
        await self._start(model, home, restart_in_place=False)

    @classmethod
    async def create(cls, model, home: str | None = None) -> LLMServer:
        """An LLM server in this process (the ingress uses it for its fused model)."""
        server = cls.__new__(cls)
        await server._start(model, home, restart_in_place=True)
        return server

    async def _start(self, model, home: str | None, restart_in_place: bool) -> None:
        self.model_id = model.id
        self._model, self._home = model, Path(home) if home else None
        self._restart_in_place = restart_in_place
        # Only such an engine takes a priority (vLLM documents any other as an error).
        self._by_priority = model.engine_kwargs.get("scheduling_policy") == "priority"
        self._recovering: asyncio.Task | None = None
        self._gave_up = False
        await self._start_engine()
        self._watch = asyncio.create_task(self._watch_engine())

    async def _start_engine(self) -> None:
        bundle = await start_engine(self._model, self._home)
        self._engine = bundle.engine
        serving = bundle.serving
        if serving.chat is None or serving.completion is None or serving.responses is None:
            bundle.engine.shutdown()
            raise ValueError(f"model '{self.model_id}': {self._model.source} is not generative")
        self._chat, self._completion = serving.chat, serving.completion
        self._tokenization, self._models = serving.tokenization, serving.models
        self._responses = serving.responses
        self._handlers = self._handler_table()
        await self._warm_up()

    async def _warm_up(self) -> None:
        """One 1-token request through vLLM's chat path (completions for a model with no
        chat template) before the first client's.

        The first request after an engine start renders the chat template for the first
        time and runs the engine's first step; whoever sends it waits for that, and in a
        burst so does everyone queued behind it on the event loop: right after start, 200
        streams at 3x capacity on the tiny app got their 429s in 230-580 ms, against about
        70 ms once warm (docs/performance.md). A failure here is logged, never fatal: the
        engine's own checks decide whether it can serve.
        """
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest

        common = {"model": self.model_id, "max_tokens": 1, "temperature": 0}
        try:
            chat = ChatCompletionRequest(**common, messages=[{"role": "user", "content": "Hi"}])
            answer = await self._chat.create_chat_completion(chat, None)
            if getattr(answer, "error", None) is not None:
                prompt = CompletionRequest(**common, prompt="Hi")
                answer = await self._completion.create_completion(prompt, None)
            if getattr(answer, "error", None) is not None:
                logger.warning("model %s: warm-up request refused: %s", self.model_id, answer)
        except Exception:
            logger.warning("model %s: warm-up request failed", self.model_id, exc_info=True)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's user_config: the LoRA adapters to serve, ``{"lora_adapters": {id: path}}``.

        A redeploy that only changes a model's adapters keeps its replicas (see
        ``builder/versions.py``) and calls this on each: adapters are loaded
        into and dropped from the running engine, which is not restarted."""
        from vllm.entrypoints.serve.lora.protocol import (
            LoadLoRAAdapterRequest,
            UnloadLoRAAdapterRequest,
        )

        wanted = dict(user_config.get("lora_adapters") or {})
        loaded = loaded_lora_adapters(self._models)
        for name in loaded.keys() - wanted.keys():
            await self._models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        for name, path in wanted.items():
            if loaded.get(name) != path:
                answer = await self._models.load_lora_adapter(
                    LoadLoRAAdapterRequest(lora_name=name, lora_path=path), self.model_id
                )
                if not isinstance(answer, str):  # vLLM's ErrorResponse
                    raise RuntimeError(f"LoRA adapter {name!r} ({path}): {answer.error.message}")
        if self._model.lora is not None:  # what an in-place engine restart loads
            lora = self._model.lora.model_copy(update={"adapters": wanted})
            self._model = self._model.model_copy(update={"lora": lora})

    def ready(self) -> bool:
        """Whether the engine can take a request now (not dead, not restarting)."""
        if self._engine.errored and self._recovering is None:
            self._recovering = asyncio.create_task(self._recover())
        return self._recovering is None

    async def _watch_engine(self) -> None:
        # Notice a dead engine without waiting for a request or a health check.
        while True:
            await asyncio.sleep(_WATCH_PERIOD_S)
            self.ready()

    async def _recover(self) -> None:
        died = time.monotonic()
        if not self._restart_in_place:
            logger.error("model %s: the vLLM engine died; this replica exits", self.model_id)
            # Let the in-flight requests' 503s go out first.
            await asyncio.sleep(_EXIT_DELAY_S)
            os._exit(1)
        logger.error("model %s: the vLLM engine died; restarting it", self.model_id)
        with contextlib.suppress(Exception):
            self._engine.shutdown()
        for attempt in range(1, _RESTART_ATTEMPTS + 1):
            try:
                await self._start_engine()
            except Exception:
                logger.exception("model %s: engine restart %d failed", self.model_id, attempt)
                continue
            metrics.ENGINE_RESTARTS.labels(self.model_id).inc()
            logger.warning(
                "model %s: engine restarted in %.1f s", self.model_id, time.monotonic() - died
            )
            self._recovering = None
            return
        self._gave_up = True  # check_health now fails: Serve replaces the replica

    async def respond(
        self, endpoint: Endpoint, body: Body, meta: RequestMeta = NO_META
    ) -> AsyncGenerator[Item, None]:
        """``protocol.StreamingServer``: the ``GENERATION_ENDPOINTS``, each answered by
        vLLM's own serving class, exactly as ``vllm serve`` answers it."""
        handler = self._handlers.get(endpoint)
        if handler is None:
            yield error_body(404, f"'{self.model_id}' does not serve {endpoint.path}")
            return
        if endpoint is Endpoint.CHAT:
            try:
                chat_messages(body)
            except APIError as exc:
                yield exc.body()
                return
        if self._by_priority and meta.priority != "normal" and endpoint in _PRIORITIZED:
            # The caller's tenant's class, which the ingress set (clients cannot).
            body = {**body, "priority": VLLM_PRIORITY[meta.priority]}
        async for item in self._serve(handler, body, meta):
            yield item

    def _handler_table(self) -> dict[Endpoint, _Handler]:
        """What answers each endpoint: vLLM's request model and serving method."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
        from vllm.entrypoints.serve.tokenize.protocol import DetokenizeRequest, TokenizeRequest

        return {
            Endpoint.CHAT: _Handler(ChatCompletionRequest, self._chat.create_chat_completion),
            Endpoint.COMPLETIONS: _Handler(CompletionRequest, self._completion.create_completion),
            # vLLM's router dumps Responses answers by alias, the others plainly.
            Endpoint.RESPONSES: _Handler(ResponsesRequest, self._create_responses, by_alias=True),
            Endpoint.TOKENIZE: _Handler(TokenizeRequest, self._tokenization.create_tokenize),
            Endpoint.DETOKENIZE: _Handler(DetokenizeRequest, self._tokenization.create_detokenize),
        }

    async def _create_responses(self, request: Any, raw_request: Any) -> Any:
        """OpenAI's Responses API (``POST /v1/responses``), by vLLM's own serving class."""
        result = await self._responses.create_responses(request, raw_request)
        if isinstance(result, AsyncGenerator):
            # Event objects, written as typed SSE events exactly as vLLM's router does.
            return responses_sse_events(result)
        return result

    async def _serve(
        self, handler: _Handler, body: Body, meta: RequestMeta
    ) -> AsyncGenerator[Item, None]:
        request, error = parse_request(handler.request_type, body)
        if error is not None:
            yield error
            return
        if not self.ready():
            yield self._unavailable().body()
            return
        try:
            result = await handler.create(request, raw_request(meta.headers))
        except Exception as exc:  # vLLM raises some request errors instead of returning them
            yield self._unavailable().body() if self._engine.errored else vllm_error(exc)
            return
        if not isinstance(result, AsyncGenerator):
            # vLLM's router dumps Responses answers by alias, the others plainly.
            answer = (
                result.model_dump(mode="json", by_alias=True)
                if handler.by_alias
                else result.model_dump()
            )
            # vLLM reports a dead engine as a 500; it is the retryable 503.
            yield (
                self._unavailable().body() if "error" in answer and self._engine.errored else answer
            )
            return
        # A cancelled handle call (client gone) closes this generator, which
        # makes vLLM abort the request and free its KV cache.
        async for event in result:
            # vLLM ends a stream whose engine died with a 500 error event.
            if sse.is_error(event) and self._engine.errored:
                raise self._unavailable()
            yield event

    def _unavailable(self) -> APIError:
        self.ready()  # starts the recovery if nothing has yet
        return unavailable(self.model_id)

    async def metrics_text(self) -> metrics.ReplicaMetrics:
        """This replica's Prometheus metrics, including vLLM's ``vllm:*`` engine metrics."""
        return metrics.replica_exposition()

    async def check_health(self) -> None:
        """Serve's health check. Raising makes Serve replace the replica, so an
        engine being restarted in place is not a failure; one that could not be is."""
        if self._gave_up:
            raise RuntimeError(f"model {self.model_id}: the engine could not be restarted")
        if self.ready():
            await self._engine.check_health()

    async def probe(self) -> None:
        """For ``/health``: raises unless the engine can take a request now."""
        if not self.ready():
            raise RuntimeError(f"model {self.model_id}: the engine is restarting")
        await self._engine.check_health()
