"""Deployment versions, so that a redeploy restarts only what changed.

``serve.run`` gives a deployment without a version a random one on every
call (``ray/serve/_private/client.py``), so each ``llmserve deploy`` used to
restart every replica of every deployment, engines included, even for a
one-line change to one model. Serve keeps a replica when its version is
unchanged and applies the light options (``num_replicas``, autoscaling,
request limits) in place.

A deployment's version here is a hash of its constructor arguments (less
each component's ``deployment`` block, which Serve applies itself, its
``limits``, which only the ingress checks, and a model's LoRA adapters,
which its replicas load at run time) and of
llmserve's own source. Changing a model's ``engine_kwargs`` restarts that
model's replicas; changing its ``num_replicas`` adds or removes replicas and
keeps the others; a deployment whose arguments did not change is left alone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from ray.serve import Application
from ray.serve.deployment import Deployment

from llmserve.compat.ray import bind_with_version, bound_deployment

_PACKAGE = Path(__file__).resolve().parent.parent
# Config fields a running replica takes without a restart. A component's ``limits``
# are the ingress's to check (they reach it on its routes): its replicas never read them.
_APPLIED_IN_PLACE: dict[str, Any] = {"deployment": True, "lora": {"adapters": True}, "limits": True}


def bind(deployment: Deployment, *args: Any) -> Application:
    """``deployment.bind(*args)``, with a version that changes only when the
    arguments (or llmserve's code) do."""
    # Serve's public options no longer take a version (see compat.ray);
    # tests/e2e/test_lora.py checks that a redeploy keeps a replica.
    return bind_with_version(deployment, version_of(args), *args)


def version_of(args: tuple[Any, ...]) -> str:
    """Stable hash of constructor arguments, plus llmserve's source."""
    encoded = json.dumps([_code_hash(), _plain(args)], sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """JSON-able form of an argument; a bound deployment is its name."""
    if isinstance(value, Application):
        return {"deployment": bound_deployment(value).name}
    if isinstance(value, BaseModel):
        # A component's ``deployment`` block is Serve's to apply: replica counts
        # and limits in place, actor options (CPUs, placement) by a restart
        # Serve decides on itself. Replicas never read it. A model's LoRA
        # adapters reach its replicas as Serve's user_config (``reconfigure``).
        return value.model_dump(mode="json", exclude=_APPLIED_IN_PLACE)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # An unknown type has no stable form; refuse rather than hash a repr
    # that may hold a memory address (a new version on every deploy).
    raise TypeError(f"no stable version for a deployment argument of type {type(value)}")


@functools.cache
def _code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
