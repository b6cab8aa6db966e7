"""Preparing the built-in models a config uses, once, before anything loads them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmserve.models.builtin import builtin_name, is_builtin, prepare_builtin

if TYPE_CHECKING:
    from llmserve.config import AppConfig


def builtin_models(config: AppConfig) -> list[str]:
    """Names of the built-in models the config's engines use."""
    return sorted(
        {builtin_name(e.config.source) for e in config.engines() if is_builtin(e.config.source)}
    )


def prepare_models(config: AppConfig) -> None:
    """Prepare built-in models once, in the driver, before any replica starts."""
    for name in builtin_models(config):
        prepare_builtin(name, config.home_dir())
