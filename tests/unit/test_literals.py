"""llmserve.literals: every field and check that takes one of these words takes exactly them."""

from __future__ import annotations

import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from llmserve.config import EngineConfig, ParallelismConfig, RetrieverConfig
from llmserve.literals import DEVICES, PLACEMENT_STRATEGIES, SEARCH_MODES
from llmserve.openai.protocol import RagOverrides, RetrieveRequest

pytestmark = pytest.mark.unit


def _words(model: type[BaseModel], field: str) -> set[Any]:
    """The values a pydantic field's Literal (optionally ``| None``) allows."""
    annotation = model.model_fields[field].annotation
    literals = [annotation, *typing.get_args(annotation)]
    return {w for a in literals if typing.get_origin(a) is Literal for w in typing.get_args(a)}


@pytest.mark.parametrize(
    ("model", "field"),
    [(RetrieverConfig, "default_mode"), (RagOverrides, "mode"), (RetrieveRequest, "mode")],
)
def test_config_and_requests_name_the_search_modes_the_store_has(model, field) -> None:
    # ChunkStore.search runs each of SEARCH_MODES (tests/unit/rag/test_rag_store.py).
    assert _words(model, field) == set(SEARCH_MODES)


def test_a_config_device_is_auto_or_a_device() -> None:
    assert _words(EngineConfig, "device") == {"auto", *DEVICES}


def test_a_config_strategy_is_a_placement_strategy() -> None:
    assert _words(ParallelismConfig, "placement_strategy") == set(PLACEMENT_STRATEGIES)


@pytest.mark.parametrize("device", DEVICES)
def test_every_device_has_a_worker_bundle_and_an_image(device) -> None:
    from llmserve.builder.placement import compute_placement
    from llmserve.cluster.kuberay import DEFAULT_IMAGES

    [bundle] = compute_placement(1, 1, device).bundles
    assert bundle == ParallelismConfig().worker_resources(device)
    assert bundle == {device.upper(): 1.0}
    assert device in DEFAULT_IMAGES


def test_build_kuberay_plans_auto_as_any_device_and_nothing_else() -> None:
    from llmserve.cli.main import _parser

    for device in DEVICES:
        assert _parser().parse_args(["build", "c.yaml", "--auto-device", device]).auto_device
    with pytest.raises(SystemExit):
        _parser().parse_args(["build", "c.yaml", "--auto-device", "auto"])
