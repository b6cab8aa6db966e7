"""A bounded stand-in for vLLM's Responses store, which never forgets anything.

With VLLM_ENABLE_RESPONSES_API_STORE=1, vLLM's ``OpenAIServingResponses``
keeps every stored response in a dict (``response_store``) and the input
messages it answered in another (``msg_store``), both by response id, for
``previous_response_id``; nothing is ever removed, so a replica's memory grows
with every request. ``ResponsesStore`` takes the place of both dicts
(``compat.vllm.bound_responses_store``): the same mapping operations, but an
id's response and messages count as one entry, and past ``max_responses``
entries or ``max_bytes`` (their JSON size) the least recently written are
dropped together. A dropped id is then unknown, as one never stored: vLLM
answers 404. A response whose messages were dropped while it was generated is
not kept either.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

logger = logging.getLogger("llmserve")

_RESPONSE, _MESSAGES = 0, 1


class ResponsesStore:
    """Stored responses and their input messages, by id, within a count and a size."""

    def __init__(self, max_responses: int, max_bytes: int):
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.bytes = 0
        self._sizes: OrderedDict[str, list[int]] = OrderedDict()
        """Per id, oldest write first: [bytes of its response, bytes of its messages]."""
        self.responses = _Part(self, _RESPONSE)
        """In place of vLLM's ``response_store``."""
        self.messages = _Part(self, _MESSAGES)
        """In place of vLLM's ``msg_store``."""

    def __len__(self) -> int:
        return len(self._sizes)

    def _written(self, key: str, part: int, size: int) -> None:
        sizes = self._sizes.setdefault(key, [0, 0])
        self.bytes += size - sizes[part]
        sizes[part] = size
        self._sizes.move_to_end(key)
        while self._sizes and (
            len(self._sizes) > self.max_responses or self.bytes > self.max_bytes
        ):
            oldest = next(iter(self._sizes))
            if oldest == key and len(self._sizes) == 1:
                logger.warning(
                    "a stored response of %d bytes exceeds responses_store.max_bytes (%d); "
                    "it is not kept",
                    self.bytes,
                    self.max_bytes,
                )
            self._drop(oldest)

    def _removed(self, key: str, part: int) -> None:
        sizes = self._sizes.get(key)
        if sizes is None:
            return
        self.bytes -= sizes[part]
        sizes[part] = 0
        if key not in self.responses.data and key not in self.messages.data:
            del self._sizes[key]

    def _drop(self, key: str) -> None:
        self.bytes -= sum(self._sizes.pop(key))
        self.responses.data.pop(key, None)
        self.messages.data.pop(key, None)


class _Part(MutableMapping[str, Any]):
    """One of vLLM's two dicts, sharing its store's bounds with the other."""

    def __init__(self, store: ResponsesStore, part: int):
        self.store = store
        self.part = part
        self.data: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if self.part == _RESPONSE and key not in self.store.messages.data:
            # vLLM writes an id's messages when its request starts and its response when
            # it ends: no messages means they were dropped meanwhile, and a response kept
            # without them would be continued with the wrong context (or, for harmony
            # models, fail). It stays unknown instead, like every dropped id.
            self.data.pop(key, None)
            self.store._removed(key, self.part)
            return
        self.data[key] = value
        self.store._written(key, self.part, json_size(value))

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.store._removed(key, self.part)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON: a pydantic model (a response), or a list of messages
    (dicts, pydantic models, or harmony ``Message`` objects, which have ``to_dict``)."""
    if hasattr(value, "model_dump_json"):
        return len(value.model_dump_json().encode())
    return len(json.dumps(value, default=_plain, ensure_ascii=False).encode())


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
