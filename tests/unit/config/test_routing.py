"""The ``request_router`` field: where it belongs, and what it refuses."""

from __future__ import annotations

import pytest

from llmserve.config import ConfigError, validate_config_dict
from llmserve.config.routing import DEFAULT_REQUEST_ROUTER, PrefixRouterConfig

pytestmark = pytest.mark.unit

MODEL = {"source": "builtin:tiny-llama"}


def model(**deployment) -> dict:
    return {"id": "m", **MODEL, "deployment": deployment}


def issues(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate_config_dict(data)
    return [str(issue) for issue in err.value.issues]


def test_a_model_has_the_default_router_and_the_prefix_routers_defaults() -> None:
    config = validate_config_dict({"models": [model(num_replicas=2)]})
    deployment = config.models[0].deployment
    assert deployment.request_router is None and deployment.router() == DEFAULT_REQUEST_ROUTER
    if DEFAULT_REQUEST_ROUTER == "prefix_aware":
        assert deployment.prefix_settings() == PrefixRouterConfig()


def test_power_of_two_has_no_prefix_settings_and_refuses_them() -> None:
    config = validate_config_dict({"models": [model(request_router="power_of_two")]})
    assert config.models[0].deployment.prefix_settings() is None
    [issue] = issues(
        {"models": [model(request_router="power_of_two", prefix_router={"min_match_chars": 9})]}
    )
    assert issue.startswith("models[0].deployment.prefix_router: ")
    assert "request_router: prefix_aware" in issue


def test_an_unknown_router_or_setting_is_refused() -> None:
    assert any("request_router" in i for i in issues({"models": [model(request_router="random")]}))
    bad = model(request_router="prefix_aware", prefix_router={"imbalance": 3})
    assert any("prefix_router.imbalance" in i for i in issues({"models": [bad]}))
    negative = model(prefix_router={"imbalance_threshold": -1})
    assert any("imbalance_threshold" in i for i in issues({"models": [negative]}))


@pytest.mark.parametrize(
    "deployment",
    [{"request_router": "prefix_aware"}, {"prefix_router": {"imbalance_threshold": 2}}],
)
def test_a_router_asked_of_the_fused_model_is_refused(deployment) -> None:
    data = {"ingress": {"fused_model": "m"}, "models": [model(**deployment)]}
    found = issues(data)
    assert found and all("fused_model" in i for i in found), found
    assert found[0].startswith("models[0].deployment.")


def test_the_fused_models_default_router_is_ignored() -> None:
    data = {"ingress": {"fused_model": "m"}, "models": [model(num_replicas=2)]}
    assert validate_config_dict(data).ingress.fused_model == "m"
    power = {"ingress": {"fused_model": "m"}, "models": [model(request_router="power_of_two")]}
    validate_config_dict(power)


@pytest.mark.parametrize("section", ["embedders", "rerankers"])
def test_pooling_models_have_no_router(section) -> None:
    data = {
        section: [
            {
                "id": "e",
                "source": "builtin:all-minilm-l6-v2",
                "deployment": {"request_router": "prefix_aware"},
            }
        ]
    }
    assert any("request_router" in i for i in issues(data))
