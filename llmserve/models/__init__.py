"""Model sources: built-in models shipped in PyPI packages, prepared offline."""

from llmserve.models.builtin import (
    BUILTINS,
    default_home,
    is_builtin,
    prepare_builtin,
    resolve_source,
)

__all__ = ["BUILTINS", "default_home", "is_builtin", "prepare_builtin", "resolve_source"]
