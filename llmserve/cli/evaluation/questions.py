"""An eval set: JSON Lines, one question per line (docs/rag.md has the format).

    {"id": "kv-cache", "question": "Which variable sizes the KV cache on CPU?",
     "source": "docs/cpu.md", "answer": "VLLM_CPU_KVCACHE_SPACE"}
    {"id": "fu-unit", "history": [{"role": "user", "content": "How is the KV cache
     sized on CPU?"}, {"role": "assistant", "content": "By VLLM_CPU_KVCACHE_SPACE."}],
     "question": "In which unit?", "source": "docs/cpu.md", "answer": "GiB"}

``question`` is required. ``history`` (earlier turns) makes the line a
follow-up. ``source`` (one or a list) names the document(s) that hold the
answer, as the pipeline's ``sources[].source`` names them (a trailing part of
the path is enough: ``cpu.md`` matches ``docs/cpu.md``). ``answer`` (one or a
list of acceptable strings) is what a grounded reply contains. Without
``source`` there is no recall, without ``answer`` no grounded rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

DEFAULT_SET = Path(__file__).resolve().parents[2] / "evals" / "docs.jsonl"
"""The shipped set: questions over llmserve's own docs/, the default app's corpus."""

MAX_LINES = 10_000
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=8000)]


class Turn(BaseModel):
    """One earlier message of a follow-up's conversation."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: Text


class EvalItem(BaseModel):
    """One line of an eval set."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="A name for the question, shown in --json output.")
    question: Text = Field(..., description="What the user asks (the last user message).")
    history: list[Turn] = Field(
        default_factory=list, max_length=50, description="Earlier turns: a follow-up."
    )
    source: Text | list[Text] | None = Field(None, description="The gold document(s).")
    answer: Text | list[Text] | None = Field(None, description="What a grounded reply contains.")

    @property
    def followup(self) -> bool:
        return bool(self.history)

    @property
    def sources(self) -> list[str]:
        return _listed(self.source)

    @property
    def answers(self) -> list[str]:
        return _listed(self.answer)

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat messages, ending with the question."""
        turns = [turn.model_dump() for turn in self.history]
        return [*turns, {"role": "user", "content": self.question}]


def _listed(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class EvalSetError(ValueError):
    """A line that is not an eval item; the message names the file and line."""


def load(path: Path) -> list[EvalItem]:
    """Every item of the file, in order; ``EvalSetError`` at the first bad line."""
    items: list[EvalItem] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if number > MAX_LINES:
                raise EvalSetError(f"{path}: more than {MAX_LINES} lines")
            try:
                items.append(EvalItem.model_validate(json.loads(line)))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise EvalSetError(f"{path}, line {number}: {_reason(exc)}") from None
    if not items:
        raise EvalSetError(f"{path}: no questions")
    return items


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "line"
        return f"{where}: {error['msg']}"
    return f"not JSON ({exc})"
