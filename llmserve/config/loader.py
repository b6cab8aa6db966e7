"""Reading a config file: YAML in, a validated AppConfig or a ConfigError out."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llmserve.config.app import AppConfig
from llmserve.config.errors import ConfigError, ConfigIssue, to_issues
from llmserve.config.serving_args import resolve_chat_template

FILE_PATH = "<file>"
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML silently overwrites."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_issue(path: Path, exc: yaml.YAMLError) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return ConfigIssue(FILE_PATH, f"{path}: invalid YAML{where}: {problem}")


def _resolve(value: Any, base_dir: Path) -> Any:
    if not isinstance(value, str) or not value or _URI_SCHEME.match(value):
        return value
    return os.path.normpath(base_dir / os.path.expanduser(value))


def resolve_relative_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A copy of raw config data with local paths made absolute against ``base_dir``.

    Covers ``home``, retriever ``uri``s, corpus ``paths``, and a model's
    ``serving.chat_template`` file and LoRA adapter folders (only when they
    exist there); URIs with a scheme (s3://, gs://, db://) are left alone.
    Malformed entries are left for validation to report.
    """
    data = copy.deepcopy(data)
    base_dir = Path(base_dir).absolute()
    if "home" in data:
        data["home"] = _resolve(data["home"], base_dir)
    retrievers = data.get("retrievers")
    for retriever in retrievers if isinstance(retrievers, list) else []:
        if not isinstance(retriever, dict):
            continue
        if "uri" in retriever:
            retriever["uri"] = _resolve(retriever["uri"], base_dir)
        corpus = retriever.get("corpus")
        if isinstance(corpus, dict) and isinstance(corpus.get("paths"), list):
            corpus["paths"] = [_resolve(p, base_dir) for p in corpus["paths"]]
    models = data.get("models")
    for model in models if isinstance(models, list) else []:
        serving = model.get("serving") if isinstance(model, dict) else None
        if isinstance(serving, dict) and "chat_template" in serving:
            serving["chat_template"] = resolve_chat_template(serving["chat_template"], base_dir)
        lora = model.get("lora") if isinstance(model, dict) else None
        adapters = lora.get("adapters") if isinstance(lora, dict) else None
        if isinstance(adapters, dict):
            # A folder relative to the config file; otherwise a Hugging Face id.
            for name, path in adapters.items():
                if isinstance(path, str) and (base_dir / os.path.expanduser(path)).exists():
                    adapters[name] = _resolve(path, base_dir)
    return data


def validate_config_dict(data: Any, base_dir: Path | None = None) -> AppConfig:
    """Validate already-parsed config data; relative paths are resolved if ``base_dir`` is given."""
    if not isinstance(data, dict):
        found = type(data).__name__
        raise ConfigError([ConfigIssue("<root>", f"expected a mapping of settings, got {found}")])
    if base_dir is not None:
        data = resolve_relative_paths(data, base_dir)
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(to_issues(exc, AppConfig)) from None


def load_config(path: str | os.PathLike[str]) -> AppConfig:
    """Read, resolve and validate a YAML config file."""
    path = Path(path)
    return validate_config_dict(read_config_data(path), base_dir=path.absolute().parent)


def read_config_data(path: str | os.PathLike[str]) -> Any:
    """The YAML data of a config file as written (relative paths kept), not yet validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(FILE_PATH, f"{path}: no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([ConfigIssue(FILE_PATH, f"{path}: cannot read: {reason}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(path, exc)]) from None
    if data is None:
        raise ConfigError(
            [ConfigIssue(FILE_PATH, f"{path} is empty; define at least one model or pipeline")]
        )
    return data
