"""Model sources: built-in models shipped in PyPI packages, prepared offline."""

from llmserve.models.builtin import (
    BUILTIN_PREFIX,
    BUILTINS,
    default_home,
    is_builtin,
    prepare_builtin,
    resolve_source,
)
from llmserve.models.prepare import builtin_models, prepare_models

__all__ = [
    "BUILTINS",
    "BUILTIN_PREFIX",
    "builtin_models",
    "default_home",
    "is_builtin",
    "prepare_builtin",
    "prepare_models",
    "resolve_source",
]
