"""Deployment versions: a redeploy restarts what changed and nothing else.

Serve keeps a replica whose deployment version is unchanged, so these
versions decide which engines a `llmserve deploy` restarts.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from ray.serve import Application

from llmserve.builder.app import build_app
from llmserve.builder.versions import version_of
from llmserve.compat.ray import bound_deployment
from llmserve.config import validate_config_dict
from tests.conftest import CONFIGS
from tests.unit.builder.test_app import _applications

pytestmark = pytest.mark.unit

# The default app (fused model, RAG stages) plus a model of its own deployment.
BASE = yaml.safe_load((CONFIGS / "default.yaml").read_text())
# (Its resume_streams is explicit: the default follows the replica count, and
# which models resume is the ingress's business.)
BASE["models"].append(
    {
        **copy.deepcopy(BASE["models"][0]),
        "id": "other",
        "resume_streams": False,
        "lora": {"adapters": {"other-a": "/srv/lora/a"}},
    }
)


def versions(data: dict) -> dict[str, str]:
    """``{deployment name: version}`` for the app built from ``data``."""
    found: dict[str, str] = {}

    def collect(app: Application) -> None:
        dep = bound_deployment(app)
        if dep.name not in found:
            found[dep.name] = dep.version
            for child in _applications((dep.init_args, dep.init_kwargs)):
                collect(child)

    collect(build_app(validate_config_dict(data, base_dir=CONFIGS)))
    return found


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def edited(edit) -> dict:
    data = copy.deepcopy(BASE)
    edit(data)
    return data


def model(data: dict, id_: str) -> dict:
    return next(m for m in data["models"] if m["id"] == id_)


@pytest.fixture(scope="module")
def base() -> dict[str, str]:
    return versions(BASE)


def test_every_deployment_has_a_version_and_the_same_config_keeps_them(base) -> None:
    assert all(base.values()), base
    assert versions(copy.deepcopy(BASE)) == base


def test_an_engine_argument_restarts_that_model_only(base) -> None:
    after = versions(
        edited(lambda d: model(d, "other")["engine_kwargs"].update(max_model_len=1024))
    )
    assert changed(base, after) == {"llm-other"}


def test_replicas_and_limits_restart_nothing(base) -> None:
    def scale(d: dict) -> None:
        # Not the fused model's: its limits are the ingress's admission gate.
        for component in (model(d, "other"), *d["embedders"], *d["rerankers"], *d["retrievers"]):
            component.setdefault("deployment", {})["max_queued_requests"] = 7
            component["deployment"]["num_replicas"] = 2

    assert changed(base, versions(edited(scale))) == set()


def test_a_model_added_or_removed_restarts_the_ingress_and_nothing_else(base) -> None:
    def add(d: dict) -> None:
        d["models"].append({**copy.deepcopy(model(d, "other")), "id": "extra", "lora": None})

    def remove(d: dict) -> None:
        d["models"].remove(model(d, "other"))

    assert changed(base, versions(edited(add))) == {"ingress", "llm-extra"}
    assert changed(base, versions(edited(remove))) == {"ingress", "llm-other"}


def test_adapters_changed_restart_the_ingress_only(base) -> None:
    # The model's replicas load and drop adapters at run time (LLMServer.reconfigure);
    # the ingress routes the new ids.
    def swap(d: dict) -> None:
        model(d, "other")["lora"]["adapters"] = {"other-b": "/srv/lora/b"}

    assert changed(base, versions(edited(swap))) == {"ingress"}


def test_request_caps_changed_restart_the_ingress_only(base) -> None:
    # Only the ingress checks them (ingress/caps.py); no engine replica reads them.
    def cap(d: dict) -> None:
        model(d, "other")["limits"] = {"max_n": 2}
        d["embedders"][0]["limits"] = {"max_inputs": 10}
        d["rerankers"][0]["limits"] = {"max_documents": 10}
        d["pipelines"][0]["max_top_k"] = 30

    assert changed(base, versions(edited(cap))) == {"ingress"}


def test_unknown_argument_types_are_refused() -> None:
    with pytest.raises(TypeError, match="no stable version"):
        version_of((object(),))
