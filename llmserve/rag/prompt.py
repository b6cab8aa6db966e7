"""Turn retrieved chunks into chat messages for the generator.

Sources are numbered ``[1]``, ``[2]``… in rank order so the model can cite
them, and the same numbering is what the API returns as ``sources``: the hits
returned by :func:`build_messages` are exactly the ones the model saw.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from llmserve.rag.store import Hit

NO_SOURCES = "No relevant sources were found."
_PLACEHOLDER = re.compile(r"\{(context|question)\}")
_ELLIPSIS = " …"


def format_source(number: int, hit: Hit) -> str:
    """One numbered context block: ``[n] Title (source)`` then the chunk text."""
    header = f"[{number}] {hit.title} ({hit.source})" if hit.title else f"[{number}] {hit.source}"
    return f"{header}\n{hit.text}"


def format_context(hits: Sequence[Hit], best_last: bool = False) -> str:
    """All hits as numbered blocks separated by blank lines; ``best_last``: in
    reverse rank order ([1] nearest the question), keeping each hit's number."""
    blocks = [format_source(i, hit) for i, hit in enumerate(hits, start=1)]
    return "\n\n".join(reversed(blocks) if best_last else blocks)


def render_template(template: str, *, context: str, question: str) -> str:
    """Fill ``{context}`` and ``{question}`` in one pass.

    Not ``str.format``: templates may contain other braces (JSON examples), and
    a retrieved chunk that happens to contain ``{question}`` must stay literal.
    """
    values = {"context": context, "question": question}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def fit_hits(
    hits: Sequence[Hit], token_budget: int, count_tokens: Callable[[str], int]
) -> list[Hit]:
    """Choose the hits whose numbered blocks fit in ``token_budget`` tokens.

    Hits are taken in rank order, whole; one that doesn't fit is skipped so a
    smaller, lower-ranked one may still get in. If not even the best hit fits
    on its own, its text is cut down to fit (ending with ``…``) rather than
    answering with no context at all.
    """
    used: list[Hit] = []
    spent = 0
    for hit in hits:
        cost = count_tokens(format_source(len(used) + 1, hit))
        if spent + cost <= token_budget:
            used.append(hit)
            spent += cost
        elif not used:
            truncated = _truncate_to_fit(hit, token_budget, count_tokens)
            if truncated is not None:
                used.append(truncated)
                spent += count_tokens(format_source(1, truncated))
    return used


def _truncate_to_fit(hit: Hit, token_budget: int, count_tokens: Callable[[str], int]) -> Hit | None:
    """The longest word-boundary prefix of ``hit.text`` whose block fits the budget."""

    def fits(length: int) -> bool:
        text = hit.text[:length].rstrip() + _ELLIPSIS
        return count_tokens(format_source(1, dataclasses.replace(hit, text=text))) <= token_budget

    if not fits(0):
        return None
    low, high = 0, len(hit.text)  # invariant: fits(low); binary search on characters
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    cut = hit.text[:low]
    if low < len(hit.text) and " " in cut:
        cut = cut[: cut.rindex(" ")]  # don't end mid-word
    return dataclasses.replace(hit, text=cut.rstrip() + _ELLIPSIS)


def build_messages(
    question: str,
    hits: Sequence[Hit],
    system_prompt: str | None,
    prompt_template: str,
    token_budget: int,
    count_tokens: Callable[[str], int],
    history: Sequence[Mapping[str, Any]] | None = None,
    best_last: bool = False,
) -> tuple[list[dict[str, Any]], list[Hit]]:
    """Build the chat messages for a RAG answer.

    Returns ``(messages, used_hits)``: ``[system?] + history + [user]`` where
    the user message is ``prompt_template`` with ``{context}`` (numbered
    sources within ``token_budget`` tokens, see :func:`fit_hits`) and
    ``{question}`` filled in. ``used_hits`` are the hits in that context, in
    citation order (a truncated first hit is returned with its shortened text).
    ``best_last`` writes the context in reverse rank order (see :func:`format_context`).
    """
    missing = [name for name in ("{context}", "{question}") if name not in prompt_template]
    if missing:
        raise ValueError(f"prompt_template must contain {' and '.join(missing)}")
    used = fit_hits(hits, token_budget, count_tokens)
    context = format_context(used, best_last) if used else NO_SOURCES
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.extend(dict(message) for message in history or ())
    user = render_template(prompt_template, context=context, question=question)
    messages.append({"role": "user", "content": user})
    return messages, used
