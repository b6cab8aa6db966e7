"""Per-request cost caps, checked in the ingress before admission and before any handle call.

The builder puts each served id's caps on its ``Route`` (from the config's
``limits`` blocks and a pipeline's ``max_top_k`` / ``max_top_n``, see
``config/limits.py``); ``check`` reads the parsed body, which the ingress has
anyway, so a request past a cap costs no admission slot, no Ray hop and no
engine time: it gets a 400 naming the field. Fused and remote deployments are
checked alike, as both are routes.

Only the size of what a request asks for is checked here. A value of the wrong
type is left alone for vLLM's own validation to refuse with its own 400; a
number is read the way vLLM's pydantic models read it (``"512"`` and ``512.0``
are 512), so no spelling slips past a cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from llmserve.config import EmbedderLimits, GenerationLimits, PipelineConfig, RerankerLimits
from llmserve.openai.errors import over_limit
from llmserve.servers.protocol import Body, Endpoint


@dataclass(frozen=True, slots=True)
class Caps:
    """One served id's caps; None: not capped here (not that kind, or left to vLLM)."""

    n: int | None = None
    """Sequences per prompt: ``n``, ``best_of``."""
    prompts: int | None = None
    """Prompts in one completions request."""
    max_tokens: int | None = None
    """Tokens one answer may generate."""
    stop: int | None = None
    """``stop`` strings."""
    logprobs: int | None = None
    """Log-probabilities per token."""
    inputs: int | None = None
    """Embedding inputs, or rerank documents."""
    top_k: int | None = None
    """Chunks a pipeline retrieves per question."""
    top_n: int | None = None
    """Chunks a pipeline keeps for the prompt."""

    @classmethod
    def for_model(cls, limits: GenerationLimits) -> Caps:
        return cls(
            n=limits.max_n,
            prompts=limits.max_prompts,
            max_tokens=limits.max_tokens,
            stop=limits.max_stop,
            logprobs=limits.max_top_logprobs,
        )

    @classmethod
    def for_embedder(cls, limits: EmbedderLimits) -> Caps:
        return cls(inputs=limits.max_inputs)

    @classmethod
    def for_reranker(cls, limits: RerankerLimits) -> Caps:
        return cls(inputs=limits.max_documents)

    @classmethod
    def for_pipeline(cls, pipeline: PipelineConfig, generator: GenerationLimits) -> Caps:
        """A pipeline passes its requests' generation fields on to its generator."""
        return cls(
            n=generator.max_n,
            max_tokens=generator.max_tokens,
            stop=generator.max_stop,
            logprobs=generator.max_top_logprobs,
            top_k=pipeline.max_top_k,
            top_n=pipeline.max_top_n,
        )


NO_CAPS = Caps()

_INT = TypeAdapter(int)


def _number(value: Any) -> int | None:
    """The integer vLLM would read from ``value``; None when it would refuse it itself."""
    if value is None:
        return None
    try:
        return _INT.validate_python(value)
    except ValidationError:
        return None


_WHOLE_VOCABULARY = 2**63
"""What ``-1`` log-probabilities asks for: more than any cap."""


def _logprobs(value: Any) -> int | None:
    number = _number(value)
    return _WHOLE_VOCABULARY if number == -1 else number


def _stop(value: Any) -> int | None:
    if isinstance(value, str):
        return 1
    return len(value) if isinstance(value, list) else None


def _batch(value: Any) -> int | None:
    """How many requests vLLM makes of a ``prompt`` or ``input``: a list of token ids is one."""
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return None


def _documents(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None


@dataclass(frozen=True, slots=True)
class _Rule:
    cap: str
    """The ``Caps`` field."""
    param: str
    """The body field, dotted for a nested one (``rag.top_k``)."""
    measure: Callable[[Any], int | None]
    noun: str | None = None
    """What the field counts, for a count (a list's length)."""

    def value(self, body: Body) -> Any:
        value: Any = body
        for key in self.param.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value


_GENERATION = (
    _Rule("n", "n", _number),
    _Rule("n", "best_of", _number),
    _Rule("stop", "stop", _stop, "stop strings"),
    _Rule("logprobs", "prompt_logprobs", _logprobs),
)
_RAG = (
    _Rule("top_k", "rag.top_k", _number),
    _Rule("top_n", "rag.top_n", _number),
)
RULES: dict[Endpoint, tuple[_Rule, ...]] = {
    Endpoint.CHAT: (
        *_GENERATION,
        _Rule("logprobs", "top_logprobs", _logprobs),
        _Rule("max_tokens", "max_tokens", _number),
        _Rule("max_tokens", "max_completion_tokens", _number),
        *_RAG,
    ),
    Endpoint.COMPLETIONS: (
        *_GENERATION,
        _Rule("max_tokens", "max_tokens", _number),
        _Rule("logprobs", "logprobs", _logprobs),
        _Rule("prompts", "prompt", _batch, "prompts"),
    ),
    Endpoint.RESPONSES: (
        _Rule("max_tokens", "max_output_tokens", _number),
        _Rule("logprobs", "top_logprobs", _logprobs),
        _Rule("stop", "stop", _stop, "stop strings"),
        *_RAG,
    ),
    Endpoint.EMBEDDINGS: (_Rule("inputs", "input", _batch, "inputs"),),
    Endpoint.RERANK: (_Rule("inputs", "documents", _documents, "documents"),),
    Endpoint.RETRIEVE: (_Rule("top_k", "top_k", _number),),
}
"""What each endpoint's body is checked for (tokenize and detokenize: nothing, they are cheap)."""


def check(caps: Caps, endpoint: Endpoint, body: Body, target: str) -> None:
    """Raise ``APIError(400)`` naming the first field of ``body`` past one of ``caps``."""
    for rule in RULES.get(endpoint, ()):
        limit = getattr(caps, rule.cap)
        if limit is None:
            continue
        value = rule.measure(rule.value(body))
        if value is not None and value > limit:
            shown = "-1 (the whole vocabulary)" if value == _WHOLE_VOCABULARY else value
            raise over_limit(rule.param, shown, limit, target, rule.noun)
