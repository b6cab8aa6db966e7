from __future__ import annotations

import pytest

from llmserve.config import ApiKeyFromEnv, IngressConfig

pytestmark = pytest.mark.unit

MODEL = {"id": "m", "source": "builtin:tiny-llama"}


def test_defaults() -> None:
    ingress = IngressConfig()
    assert (ingress.host, ingress.port, ingress.route_prefix) == ("127.0.0.1", 8000, "/")
    assert ingress.resolve_api_keys() == []


def test_literal_and_env_keys(monkeypatch) -> None:
    monkeypatch.setenv("LLMSERVE_TEST_KEY", "from-env")
    ingress = IngressConfig.model_validate({"api_keys": ["literal", {"env": "LLMSERVE_TEST_KEY"}]})
    assert ingress.api_keys == ["literal", ApiKeyFromEnv(env="LLMSERVE_TEST_KEY")]
    assert ingress.resolve_api_keys() == ["literal", "from-env"]


@pytest.mark.parametrize("value", [None, ""])
def test_unset_env_key_names_the_variable(monkeypatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("LLMSERVE_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("LLMSERVE_TEST_KEY", value)
    ingress = IngressConfig(api_keys=[ApiKeyFromEnv(env="LLMSERVE_TEST_KEY")])
    with pytest.raises(ValueError, match="LLMSERVE_TEST_KEY"):
        ingress.resolve_api_keys()


def test_bad_api_keys(issues) -> None:
    found = issues({"models": [MODEL], "ingress": {"api_keys": ["", {"envv": "X"}, 3]}})
    assert found == {
        "ingress.api_keys[0]": "an API key must not be empty",
        "ingress.api_keys[1].env": "required field is missing",
        "ingress.api_keys[1].envv": "unknown key 'envv' (did you mean 'env'?)",
        "ingress.api_keys[2]": "an API key is a string or a mapping like {env: NAME}",
    }


def test_ingress_deployment_options() -> None:
    ingress = IngressConfig.model_validate({"deployment": {"num_replicas": 2}})
    assert ingress.deployment.to_serve_options()["num_replicas"] == 2
