"""The closed sets of words that the config, the wire models and the code share.

Each set is defined once, here, as a ``Literal`` type: pydantic validates
config fields and request bodies against it, and the tuples that code checks
values against are derived from it. This package imports nothing from
llmserve, so every layer (config/, rag/ and openai/ included) may use it
without pulling in the pydantic config models.
"""

from __future__ import annotations

from typing import Literal, get_args

Device = Literal["cpu", "gpu"]
"""A device an engine runs on (``llmserve[cpu]`` or ``llmserve[gpu]``)."""
DEVICES: tuple[Device, ...] = get_args(Device)

DeviceSetting = Literal["auto", Device]
"""A config's ``device``: a device, or ``auto`` (gpu when the engine gets GPUs)."""

PlacementStrategy = Literal["PACK", "STRICT_PACK", "SPREAD", "STRICT_SPREAD"]
"""Ray's placement-group strategies for an engine replica's worker bundles."""
PLACEMENT_STRATEGIES: tuple[PlacementStrategy, ...] = get_args(PlacementStrategy)

SearchMode = Literal["hybrid", "dense", "bm25"]
"""How a retriever searches: dense vectors, BM25 full text, or both fused."""
SEARCH_MODES: tuple[SearchMode, ...] = get_args(SearchMode)

QueryMode = Literal["last", "history", "rewrite"]
"""How a RAG pipeline builds its search query from a conversation: the last user
message, recent user turns folded in, or the question rewritten by the generator."""
QUERY_MODES: tuple[QueryMode, ...] = get_args(QueryMode)

Priority = Literal["high", "normal", "low"]
"""A tenant's priority class: the order of admission under overload (``ingress.tenants``)."""
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
"""Highest first: a class's index is its rank."""
