"""The search query of a conversation: follow-up questions retrieved in context.

A follow-up such as "How much does it cost?" names nothing to search for; its
subject is in the earlier turns. A pipeline's ``query_mode`` (or the request's
``rag.query_mode``) says how the query is built:

- ``last``: the last user message alone;
- ``history``: the earlier user turns (``query_history_turns`` of them) folded
  in before it, with no model call;
- ``rewrite``: the generator (or ``rewrite_model``, one of its LoRA adapters)
  rewrites the question into a standalone one, within ``rewrite_max_tokens``
  and ``rewrite_timeout_s``. A question without history is searched as it is;
  a failed, empty or late rewrite falls back to ``history``, and says why.

The rewrite goes through the router's own generator client, so the call graph
gains no edge. The answer's ``rag.query`` block says which query was searched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llmserve.literals import QueryMode
from llmserve.openai.messages import text_of
from llmserve.servers.clients import Client
from llmserve.servers.protocol import Endpoint, RequestMeta
from llmserve.servers.rag.query import Question

if TYPE_CHECKING:
    from llmserve.config import PipelineConfig
    from llmserve.servers.rag.retrieval import Timings

logger = logging.getLogger("llmserve")

TURN_CHARS = 500
"""Most characters of one earlier turn that go into a query or a rewrite prompt."""

REWRITE_SYSTEM = (
    "Rewrite the user's last question so that it can be understood without the "
    "conversation: replace words like it, this or they with what they refer to. "
    "Reply with the rewritten question only."
)


@dataclass(frozen=True, slots=True)
class SearchText:
    """The query searched for, how it was built, and why a rewrite fell back."""

    text: str
    mode: QueryMode
    fallback: str | None = None

    def block(self) -> dict[str, Any]:
        """The answer's ``rag.query``."""
        block: dict[str, Any] = {"mode": self.mode, "text": self.text}
        if self.fallback is not None:
            block["fallback"] = self.fallback
        return block


TENANT_FIELDS = ("cache_salt", "priority")
"""Body fields the ingress writes for a tenant (``ingress/tenants.py``) that the rewrite,
a request made on the tenant's behalf, keeps: its prefix-cache isolation (a rewrite
prompt holds the tenant's conversation) and its engine priority."""


class FollowUp:
    """Builds one pipeline's search queries."""

    def __init__(self, cfg: PipelineConfig, generator: Client) -> None:
        self.cfg = cfg
        self._generator = generator

    async def query(
        self,
        question: Question,
        mode: QueryMode | None,
        meta: RequestMeta,
        timings: Timings,
        body: Mapping[str, Any] | None = None,
    ) -> SearchText:
        """The query for ``question`` in ``mode`` (None: the pipeline's); ``body``: the
        client's request, whose ``TENANT_FIELDS`` a rewrite keeps."""
        mode = mode or self.cfg.query_mode
        turns = self._turns(question.history)
        if mode == "last" or not turns:
            return SearchText(question.text, mode)
        if mode == "history":
            return SearchText(folded(turns, question.text), mode)
        started = time.perf_counter()
        text, fallback = await self._rewrite(turns, question.text, meta, body or {})
        timings.observe("rewrite", started)
        if text is None:
            return SearchText(folded(turns, question.text), "history", fallback)
        return SearchText(text, mode)

    def _turns(self, history: list[Any]) -> list[tuple[str, str]]:
        """``(role, text)`` of the user and assistant messages of the last
        ``query_history_turns`` user turns (system messages are no turn)."""
        turns = [
            (m["role"], text_of(m.get("content")).strip()[:TURN_CHARS])
            for m in history
            if isinstance(m, dict) and m.get("role") in ("user", "assistant")
        ]
        users = [i for i, (role, _) in enumerate(turns) if role == "user"]
        if not users:
            return []
        start = users[max(0, len(users) - self.cfg.query_history_turns)]
        return [(role, text) for role, text in turns[start:] if text]

    async def _rewrite(
        self,
        turns: list[tuple[str, str]],
        question: str,
        meta: RequestMeta,
        client_body: Mapping[str, Any],
    ) -> tuple[str | None, str | None]:
        """``(the standalone question, None)``, or ``(None, why not)``."""
        body = {
            "model": self.cfg.rewrite_model or self.cfg.generator,
            "messages": rewrite_messages(turns, question),
            "max_tokens": self.cfg.rewrite_max_tokens,
            "temperature": 0,
            "stream": False,
            **{k: client_body[k] for k in TENANT_FIELDS if k in client_body},
        }
        stream = self._generator.stream(Endpoint.CHAT, body, _own_request_id(meta))
        try:
            answer = await asyncio.wait_for(stream.__anext__(), self.cfg.rewrite_timeout_s)
        except TimeoutError:
            return None, "timeout"
        except Exception as exc:
            logger.warning("pipeline %s: query rewrite failed: %r", self.cfg.id, exc)
            return None, "error"
        finally:
            stream.cancel()  # a late or failed rewrite frees its engine work
        if not isinstance(answer, dict) or "error" in answer:
            logger.warning("pipeline %s: query rewrite failed: %s", self.cfg.id, answer)
            return None, "error"
        text = standalone(answer)
        return (text, None) if text else (None, "empty")


def _own_request_id(meta: RequestMeta) -> RequestMeta:
    """The client's ``X-Request-Id`` with ``-rewrite`` added: vLLM keys its requests by
    that id, and a late rewrite may still be aborting when the answer starts."""
    request_id = meta.headers.get("x-request-id")
    if request_id is None:
        return meta
    return replace(meta, headers={**meta.headers, "x-request-id": f"{request_id}-rewrite"})


def folded(turns: list[tuple[str, str]], question: str) -> str:
    """The earlier user turns, then the question: one query for BM25 and embeddings."""
    return "\n".join([*(text for role, text in turns if role == "user"), question])


def rewrite_messages(turns: list[tuple[str, str]], question: str) -> list[dict[str, str]]:
    """The rewrite prompt: the conversation, then the question to make standalone."""
    lines = [f"{'User' if role == 'user' else 'Assistant'}: {text}" for role, text in turns]
    conversation = "\n".join(lines)
    user = (
        f"Conversation:\n{conversation}\n\nLast question: {question}\n\n"
        "The last question rewritten to stand on its own:"
    )
    return [{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}]


def standalone(answer: dict[str, Any]) -> str:
    """The rewritten question in a chat answer: its first non-empty line, unquoted."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return ""
    if not isinstance(content, str):
        return ""
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[0]
    for prefix in ("Standalone question:", "Rewritten question:", "Question:"):
        if text.lower().startswith(prefix.lower()):
            text = text[len(prefix) :].strip()
    return text.strip("\"'“” ")[:TURN_CHARS]
