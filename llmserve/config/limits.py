"""Per-request cost caps: how much work one request may ask of an engine.

A shared service cannot let one request take the whole engine: on a CPU, a chat
request with ``n: 512`` and ``max_tokens: 1`` held the default app's engine for
42 s, and a ``/v1/rerank`` call with 100,000 documents kept the reranker busy for
minutes. The ingress checks each request against its target's caps before it
queues and before any handle call (``ingress/caps.py``), so a request past a cap
costs nothing downstream: it gets a 400 naming the field (``param``) and the cap.

Where vLLM has a bound of its own it is noted; a cap checked in the ingress
refuses before the request takes an admission slot or a Ray hop, and vLLM still
checks its own. A RAG pipeline's requests are checked against its generator's
``GenerationLimits`` and the pipeline's own ``max_top_k`` / ``max_top_n``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GenerationLimits(BaseModel):
    """What one chat, completions or Responses request may ask of a generative model."""

    model_config = ConfigDict(extra="forbid")

    max_n: int = Field(
        8,
        gt=0,
        description=(
            "Most sequences generated per prompt: `n` (and `best_of`, which vLLM 0.32 ignores "
            "but OpenAI's API defines as sequences generated). Each sequence is a slot in the "
            "engine's batch for the whole answer; vLLM's own bound is 16,384. 8 leaves the "
            "batch to many clients (n: 512 held a CPU engine for 42 s for one token each)."
        ),
    )
    max_prompts: int = Field(
        8,
        gt=0,
        description=(
            "Most prompts in one /v1/completions request (`prompt` as a list of strings or "
            "of token lists; vLLM runs each as its own request, times `n`). vLLM's own bound "
            "is 1,024. 8 prompts of `max_n` sequences is at most 64 sequences, the default "
            "max_ongoing_requests of one replica."
        ),
    )
    max_tokens: int | None = Field(
        None,
        gt=0,
        description=(
            "Most tokens one answer may generate: chat `max_tokens` and "
            "`max_completion_tokens`, completions `max_tokens`, Responses "
            "`max_output_tokens`. null: only the context bounds it (vLLM refuses more than "
            "the prompt leaves of max_model_len), and request_timeout_s bounds the time."
        ),
    )
    max_stop: int = Field(
        4,
        ge=0,
        description=(
            "Most `stop` strings per request; each is searched for in the text after every "
            "token. 4 is OpenAI's limit and vLLM's own (VLLM_MAX_STOP_STRINGS, read from the "
            "replica's environment): to allow more, raise both."
        ),
    )
    max_top_logprobs: int = Field(
        20,
        ge=0,
        description=(
            "Most log-probabilities per token: chat and Responses `top_logprobs`, completions "
            "`logprobs`, and `prompt_logprobs` (-1, the whole vocabulary, is refused). 20 is "
            "OpenAI's limit and vLLM's own (engine_kwargs.max_logprobs): to allow more, "
            "raise both."
        ),
    )


class EmbedderLimits(BaseModel):
    """What one /v1/embeddings request may ask of an embedder."""

    model_config = ConfigDict(extra="forbid")

    max_inputs: int = Field(
        256,
        gt=0,
        description=(
            "Most inputs in one /v1/embeddings request (`input` as a list of strings or of "
            "token lists); vLLM has no bound of its own. Each input is its own engine request "
            "of up to the model's context; 256 keeps one request to seconds on a CPU "
            "(OpenAI allows 2,048 on GPUs). Retrievers embed through their own batched path, "
            "which this does not limit."
        ),
    )


class RerankerLimits(BaseModel):
    """What one /v1/rerank request may ask of a reranker."""

    model_config = ConfigDict(extra="forbid")

    max_documents: int = Field(
        256,
        gt=0,
        description=(
            "Most `documents` in one /v1/rerank request; vLLM has no bound of its own. Each "
            "document is scored against the query by the engine (100,000 kept a CPU reranker "
            "busy for minutes); 256 is well above what a pipeline reranks (its max_top_k) and "
            "keeps one request to seconds on a CPU."
        ),
    )
