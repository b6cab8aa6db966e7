"""LoRA adapters of a generative model, served as models of their own."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from llmserve.config.common import Identifier

# vLLM's engine arguments that this block sets.
LORA_ENGINE_ARGS = ("enable_lora", "max_loras", "max_lora_rank")


class LoRAConfig(BaseModel):
    """LoRA adapters served by a model's own replicas.

    Each adapter is a model id clients send; its requests go to the base
    model's deployment, which applies the adapter (vLLM's multi-LoRA
    batching), so requests for different adapters share the base's replicas.
    """

    model_config = ConfigDict(extra="forbid")

    adapters: dict[Identifier, str] = Field(
        ...,
        min_length=1,
        description=(
            "Adapter id (the model name clients send) -> a PEFT LoRA adapter: a local folder "
            "(relative to the config file) or a Hugging Face id."
        ),
    )
    max_loras: int = Field(
        1, ge=1, description="Adapters one engine batch can mix (vLLM's max_loras)."
    )
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = Field(
        16, description="Largest adapter rank the engine accepts (vLLM's max_lora_rank)."
    )

    def engine_args(self) -> dict[str, object]:
        return {
            "enable_lora": True,
            "max_loras": self.max_loras,
            "max_lora_rank": self.max_lora_rank,
        }
