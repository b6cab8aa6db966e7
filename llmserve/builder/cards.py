"""``/v1/models`` cards: ``root`` names what a model was made from, never a server path.

A card's ``root`` is the configured ``source``: a ``builtin:`` name or a
Hugging Face id as written, and for a local folder (a model, an embedder, a
LoRA adapter) only the folder's name, so that an API client learns nothing
about the server's file system.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from llmserve.config.model import is_builtin


def public_root(source: str, id_: str) -> str:
    """``source`` as ``/v1/models`` shows it: a local folder by its name (``id_`` if it
    has none); a built-in or a Hugging Face id as it is."""
    if is_builtin(source):
        return source
    # vLLM loads an existing local folder before trying the Hub, whatever its shape.
    if not os.path.exists(os.path.expanduser(source)):
        try:
            validate_repo_id(source)
        except HFValidationError:
            pass  # a path that is not here (yet): show its name only
        else:
            return source
    return PurePosixPath(source.rstrip("/")).name or id_


def card(id_: str, source: str, kind: str, **extra: Any) -> dict[str, Any]:
    """A served id's card, less what the ingress adds (``object``, ``created``, ``owned_by``)."""
    return {"id": id_, "root": public_root(source, id_), "kind": kind, **extra}
