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


# --- exposure: who may reach an ingress without a key ---------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_a_loopback_ingress_may_run_without_keys(host: str) -> None:
    ingress = IngressConfig(host=host)
    assert ingress.on_loopback()
    assert ingress.unauthenticated_exposure() is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "my-host.example", ""])
def test_a_keyless_ingress_on_another_address_is_refused(issues, host: str) -> None:
    found = issues({"models": [MODEL], "ingress": {"host": host}})
    assert list(found) == ["ingress.api_keys"]
    message = found["ingress.api_keys"]
    assert f"host {host!r} is not a loopback address" in message
    assert "allow_unauthenticated: true" in message


def test_keys_or_the_explicit_switch_allow_another_address() -> None:
    keyed = IngressConfig.model_validate({"host": "0.0.0.0", "api_keys": [{"env": "K"}]})
    assert not keyed.on_loopback()
    assert keyed.unauthenticated_exposure() is None
    open_ = IngressConfig.model_validate({"host": "0.0.0.0", "allow_unauthenticated": True})
    assert open_.unauthenticated_exposure() is None
    assert open_.serves_openly()
    assert not keyed.serves_openly() and not IngressConfig().serves_openly()


def test_a_copy_that_skipped_validation_still_reports_its_exposure() -> None:
    # model_copy does not validate: the ingress replica asks again when it starts.
    moved = IngressConfig().model_copy(update={"host": "0.0.0.0"})
    assert "not a loopback address" in (moved.unauthenticated_exposure() or "")


def test_overriding_the_address_validates_again() -> None:
    from llmserve.config import ConfigError

    ingress = IngressConfig()
    assert ingress.with_address(port=9000).port == 9000
    with pytest.raises(ConfigError) as info:
        ingress.with_address(host="0.0.0.0")
    [issue] = info.value.issues
    assert issue.path == "ingress.api_keys"
    keyed = IngressConfig.model_validate({"api_keys": [{"env": "K"}]})
    moved = keyed.with_address(host="0.0.0.0", port=9001)
    assert (moved.host, moved.port, moved.api_keys) == ("0.0.0.0", 9001, keyed.api_keys)


# --- allowed_hosts ----------------------------------------------------------------


def test_a_loopback_ingress_answers_loopback_names_only_by_default() -> None:
    assert IngressConfig().host_allow_list() == ["localhost", "127.0.0.1", "::1"]


def test_an_ingress_on_another_address_answers_any_host_by_default() -> None:
    ingress = IngressConfig.model_validate({"host": "0.0.0.0", "api_keys": ["k"]})
    assert ingress.host_allow_list() is None


def test_allowed_hosts_are_normalised() -> None:
    ingress = IngressConfig(allowed_hosts=["API.Example.com", "[::1]", "*.corp.example.", "*"])
    assert ingress.host_allow_list() == ["api.example.com", "::1", "*.corp.example", "*"]


def test_bad_allowed_hosts(issues) -> None:
    bad = ["", "a.example:8000", "http://a.example", "a.example/v1", "*a.example", "a b"]
    found = issues({"models": [MODEL], "ingress": {"allowed_hosts": bad}})
    assert set(found) == {f"ingress.allowed_hosts[{i}]" for i in range(len(bad))}
    assert "no port" in found["ingress.allowed_hosts[1]"]
    found = issues({"models": [MODEL], "ingress": {"allowed_hosts": []}})
    assert "'*' for any host" in found["ingress.allowed_hosts"]
