"""What differs between the APIs a pipeline answers: one shaper per API.

After LitServe's decode / predict / encode split: a shaper ``decode``s the
question from its API's request, writes the generator's request in that API,
and ``encode``s the generator's answer, whole or streamed, with what the
retrieval found. The stages in between (``retrieval.py``) and the router's
answer path (``router.py``) are the same for every API; the router picks the
shaper by endpoint from its table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from llmserve.servers.protocol import Answer, Body
from llmserve.servers.rag.citations import Citations
from llmserve.servers.rag.query import Question


@dataclass(frozen=True, slots=True)
class Grounding:
    """What the retrieval adds to one answer."""

    query: str
    sources: list[dict[str, Any]] | None
    """The numbered sources; None when the request asked for none (``rag.return_sources``)."""
    rag: dict[str, Any]
    """The ``rag`` block: the pipeline, the query searched for and the stage timings."""
    citations: Citations | None = None
    """What the answer's ``[n]`` markers may cite, for its annotations; None: no annotations."""

    def fields(self) -> dict[str, Any]:
        """``rag`` and (unless none were asked for) ``sources``, as an answer carries them."""
        if self.sources is None:
            return {"rag": self.rag}
        return {"rag": self.rag, "sources": self.sources}


Rewrite = Callable[[str], list[str]]
"""One SSE event of the generator's stream in, the events for the client out."""


@dataclass(frozen=True, slots=True)
class StreamEncoder:
    """How one stream's events are rewritten.

    A stream is the hot path: for an API whose later events need nothing,
    ``later`` is None and the router relays them as they come, with no call
    per event at all.
    """

    first: Rewrite
    later: Rewrite | None


class Shaper(Protocol):
    """One API's side of a pipeline answer (chat completions, Responses)."""

    def decode(self, body: Body) -> Question:
        """The question and the history before it; raises ``APIError`` (400)."""
        ...

    def generate_body(self, body: Body, model: str, messages: list[dict[str, Any]]) -> Body:
        """The generator's request: the client's, with the prompt ``messages`` in
        place of its conversation, ``model`` set and the pipeline's own fields gone."""
        ...

    def encode_answer(self, answer: Answer, grounding: Grounding) -> Answer:
        """A whole answer of the generator (never an error body) with ``grounding`` added."""
        ...

    def encode_stream(self, grounding: Grounding) -> StreamEncoder:
        """The rewrites for one streamed answer."""
        ...
