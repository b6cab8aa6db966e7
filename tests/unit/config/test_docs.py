from __future__ import annotations

import json

import pytest

from llmserve.config import AppConfig
from tests.helpers import load_script

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def gen():
    return load_script("gen_config_docs")


def test_committed_reference_is_up_to_date(gen) -> None:
    assert gen.REFERENCE.read_text(encoding="utf-8") == gen.render_reference(), (
        "docs/config-reference.md is stale: run python scripts/gen_config_docs.py"
    )


def test_committed_schema_is_up_to_date(gen) -> None:
    assert json.loads(gen.SCHEMA.read_text(encoding="utf-8")) == AppConfig.model_json_schema()
    assert gen.SCHEMA.read_text(encoding="utf-8") == gen.render_schema()


def test_check_mode_passes(gen, capsys) -> None:
    assert gen.main(["--check"]) == 0, capsys.readouterr().err


def test_every_model_has_a_section(gen) -> None:
    reference = gen.render_reference()
    for model in gen.nested_models(AppConfig):
        assert f"\n## {model.__name__}\n" in reference
    assert "| `engine_kwargs` | dict[str, any] | `{}` |" in reference


def test_the_readme_holds_no_copy_of_the_reference(gen) -> None:
    """The reference lives in docs/ only: a hand copy elsewhere would go stale unnoticed."""
    readme = (gen.ROOT / "README.md").read_text(encoding="utf-8")
    rows = [line for line in gen.render_reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 50
    assert [row for row in rows if row in readme] == []
    assert "| Field | Type | Default | Description |" not in readme


def test_every_field_is_described_and_every_model_strict(gen) -> None:
    for model in gen.nested_models(AppConfig):
        assert model.model_config.get("extra") == "forbid", model.__name__
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
