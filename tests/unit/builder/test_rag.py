"""builder.rag: what the RAG deployments are built with."""

from __future__ import annotations

import dataclasses

import pytest
from ray.serve import Application

from llmserve.builder.app import build_app
from llmserve.cli.main import _parser
from llmserve.cli.rag import cmd_index
from llmserve.compat.ray import bound_deployment
from llmserve.config import load_config
from llmserve.rag import index_hint
from tests.conftest import CONFIGS

pytestmark = pytest.mark.unit

DEFAULT = CONFIGS / "default.yaml"


def _deployments(value: object, found: dict[str, Application]) -> dict[str, Application]:
    """Every bound deployment reachable from ``value`` (through handles, routes, lists)."""
    if isinstance(value, Application):
        dep = bound_deployment(value)
        if dep.name not in found:
            found[dep.name] = value
            _deployments([*dep.init_args, *dep.init_kwargs.values()], found)
    elif isinstance(value, dict):
        _deployments(list(value.values()), found)
    elif isinstance(value, list | tuple | set):
        for item in value:
            _deployments(item, found)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _deployments([getattr(value, f.name) for f in dataclasses.fields(value)], found)
    return found


def test_a_retriever_tells_clients_the_command_that_builds_its_index() -> None:
    config = load_config(DEFAULT)
    [pipeline] = config.pipelines
    retriever = _deployments(build_app(config), {})[f"retriever-{pipeline.retriever}"]
    hint = bound_deployment(retriever).init_args[-1]
    assert hint == index_hint(pipeline.id)
    # ... and that command is one the CLI runs, for that pipeline.
    command = hint.split("llmserve ", 1)[1].replace("CONFIG", str(DEFAULT)).split()
    args = _parser().parse_args(command)
    assert (args.func, args.pipeline, args.config) == (cmd_index, pipeline.id, DEFAULT)
