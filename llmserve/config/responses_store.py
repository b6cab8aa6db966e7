"""Bounds of vLLM's Responses store (``previous_response_id``) for one model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ResponsesStoreConfig(BaseModel):
    """How much of vLLM's in-memory Responses store one replica keeps.

    vLLM stores a response (and the input messages it answered) when the model's
    env_vars set VLLM_ENABLE_RESPONSES_API_STORE=1 and the request has ``store``
    on (the default), so that a later request can continue it with
    ``previous_response_id``; vLLM itself never forgets one. Past either bound
    the least recently written responses are dropped: continuing one of those
    is a 404, as for an id never stored.
    """

    model_config = ConfigDict(extra="forbid")

    max_responses: int = Field(
        1000, ge=1, description="Most responses kept per replica; the oldest are dropped first."
    )
    max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description=(
            "Most bytes kept per replica, counting each response and its input messages "
            "as JSON; the oldest are dropped first, and one larger than this is not kept."
        ),
    )
