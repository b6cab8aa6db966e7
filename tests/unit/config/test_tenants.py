"""ingress.tenants: validated like every other block, keys resolved where the app runs."""

from __future__ import annotations

import pytest

from llmserve.config import ApiKeyFromEnv, IngressConfig, validate_config_dict

pytestmark = pytest.mark.unit

MODEL = {"id": "smollm2", "source": "builtin:tiny-llama", "lora": {"adapters": {"sql": "/a"}}}


def _config(*tenants: dict, **ingress) -> dict:
    return {"models": [MODEL], "ingress": {"tenants": list(tenants), **ingress}}


def test_the_issues_example_is_valid() -> None:
    config = validate_config_dict(
        _config(
            {
                "id": "team-a",
                "api_key": {"env": "TEAM_A_KEY"},
                "priority": "high",
                "requests_per_minute": 600,
                "tokens_per_minute": 200000,
                "models": ["smollm2", "sql"],  # a LoRA adapter is an id too
                "cache_isolation": True,
            },
            {"id": "team-b", "api_keys": ["b1", "b2"]},
        )
    )
    team_a, team_b = config.ingress.tenants
    assert team_a.bearer_keys() == [ApiKeyFromEnv(env="TEAM_A_KEY")]
    assert (team_b.priority, team_b.models, team_b.cache_isolation) == ("normal", None, False)
    assert team_b.requests_per_minute is team_b.tokens_per_minute is None
    assert team_b.bearer_keys() == ["b1", "b2"]


def test_field_mistakes_name_their_path(issues) -> None:
    found = issues(
        _config(
            {"id": "a", "api_key": "k", "priorty": "high"},
            {"id": "b", "api_key": "k2", "priority": "urgent", "requests_per_minute": 0},
            {"id": "anonymous", "api_key": "k3"},
            {"id": "c"},
            {"id": "d", "api_key": "k4", "api_keys": ["k5"]},
        )
    )
    assert found == {
        "ingress.tenants[0].priorty": "unknown key 'priorty' (did you mean 'priority'?)",
        "ingress.tenants[1].priority": ("Input should be 'high', 'normal' or 'low' (got 'urgent')"),
        "ingress.tenants[1].requests_per_minute": "Input should be greater than 0 (got 0)",
        "ingress.tenants[2].id": "'anonymous' is reserved for callers that are no tenant",
        "ingress.tenants[3]": "a tenant needs a key: set api_key or api_keys",
        "ingress.tenants[4]": "set api_key or api_keys, not both",
    }


def test_unknown_model_ids_get_a_did_you_mean(issues) -> None:
    found = issues(_config({"id": "a", "api_key": "k", "models": ["smolm2", "sql", "zzz"]}))
    assert found == {
        "ingress.tenants[0].models[0]": "unknown id 'smolm2' (did you mean 'smollm2'?)",
        "ingress.tenants[0].models[2]": "unknown id 'zzz' (known: smollm2, sql)",
    }


def test_ids_and_keys_are_unique_across_callers(issues) -> None:
    found = issues(
        _config(
            {"id": "a", "api_keys": ["k1", {"env": "KEY_A"}, "k1"]},
            {"id": "a", "api_key": "anon"},
            {"id": "b", "api_key": {"env": "KEY_A"}},
            api_keys=["anon"],
        )
    )
    assert found == {
        "ingress.tenants[0].api_keys[2]": "the same key is already given to tenant 'a'",
        "ingress.tenants[1].id": "duplicate tenant id 'a'",
        "ingress.tenants[1].api_key": "the same key is already given to api_keys[0]",
        "ingress.tenants[2].api_key": "the same variable KEY_A is already given to tenant 'a'",
    }


def test_every_key_is_listed_and_resolved_from_the_environment(monkeypatch) -> None:
    ingress = IngressConfig.model_validate(
        {
            "api_keys": ["anon"],
            "tenants": [
                {"id": "a", "api_key": {"env": "LLMSERVE_TEST_A"}},
                {"id": "b", "api_keys": ["b1", "b2"]},
            ],
        }
    )
    assert [path for path, _ in ingress.key_refs()] == [
        "api_keys[0]",
        "tenants[0].api_key",
        "tenants[1].api_keys[0]",
        "tenants[1].api_keys[1]",
    ]
    monkeypatch.delenv("LLMSERVE_TEST_A", raising=False)
    with pytest.raises(ValueError, match="LLMSERVE_TEST_A"):
        ingress.resolve_all_keys()
    monkeypatch.setenv("LLMSERVE_TEST_A", "from-env")
    assert ingress.resolve_all_keys() == ["anon", "from-env", "b1", "b2"]
    assert ingress.resolve_api_keys() == ["anon"]  # the anonymous ones only, as before


def test_priority_settings_are_bounded(issues) -> None:
    found = issues(_config(priority_reserved_share=1, priority_aging_s=0))
    assert set(found) == {"ingress.priority_reserved_share", "ingress.priority_aging_s"}
