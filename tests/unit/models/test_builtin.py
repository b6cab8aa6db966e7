"""Built-in models: source resolution, and idempotent, interruption-safe preparation."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from llmserve.models import BUILTINS, default_home, prepare_builtin, resolve_source
from llmserve.models.builtin import READY_MARKER, builtin_name, model_dir

pytestmark = pytest.mark.unit

MINILM = "all-minilm-l6-v2"


@pytest.mark.parametrize(
    "source",
    ["HuggingFaceTB/SmolLM2-135M-Instruct", "/srv/models/llama", "./rel/model", "builtin"],
)
def test_other_sources_pass_through_unchanged(source: str, tmp_path: Path) -> None:
    assert resolve_source(source, home=tmp_path) == source
    assert list(tmp_path.iterdir()) == []  # nothing prepared


def test_an_unknown_builtin_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        resolve_source("builtin:gpt-5", home=tmp_path)
    message = str(info.value)
    assert "'builtin:gpt-5'" in message
    for name in BUILTINS:
        assert f"builtin:{name}" in message
    assert list(tmp_path.iterdir()) == []


def test_the_builtins() -> None:
    assert list(BUILTINS) == ["smollm2-135m-instruct", MINILM, "tiny-llama"]
    assert builtin_name(f"builtin:{MINILM}") == MINILM


def test_resolve_without_prepare_names_the_folder(tmp_path: Path) -> None:
    path = resolve_source(f"builtin:{MINILM}", home=tmp_path, prepare=False)
    assert path == str(tmp_path / "models" / MINILM)
    assert not Path(path).exists()


def test_home_defaults_to_llmserve_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMSERVE_HOME", str(tmp_path))
    assert default_home() == tmp_path
    assert model_dir(MINILM) == tmp_path / "models" / MINILM
    monkeypatch.delenv("LLMSERVE_HOME")
    assert default_home() == Path.home() / ".cache" / "llmserve"


def test_prepare_writes_a_loadable_folder_once(tmp_path: Path, monkeypatch) -> None:
    path = resolve_source(f"builtin:{MINILM}", home=tmp_path)
    dest = tmp_path / "models" / MINILM
    assert path == str(dest)
    marker = dest / READY_MARKER
    assert marker.read_text().strip() == BUILTINS[MINILM].description
    assert json.loads((dest / "config.json").read_text())["hidden_size"] == 384
    assert (dest / "model.safetensors").stat().st_size > 1_000_000
    assert (dest / "tokenizer.json").exists()
    # only the finished folder is left behind, no temporary build folders
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [MINILM]

    before = marker.stat().st_mtime_ns
    os.utime(marker, ns=(before - 10**9, before - 10**9))  # so a rewrite would show
    before = marker.stat().st_mtime_ns

    def must_not_run(out: Path) -> None:
        raise AssertionError("a prepared model was prepared again")

    monkeypatch.setitem(
        BUILTINS, MINILM, dataclasses.replace(BUILTINS[MINILM], prepare=must_not_run)
    )
    assert prepare_builtin(MINILM, tmp_path) == dest
    assert marker.stat().st_mtime_ns == before


def _interrupting(exc: BaseException):
    def prepare(out: Path) -> None:
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"half")
        raise exc

    return prepare


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_an_interrupted_preparation_leaves_nothing_ready_looking(
    tmp_path: Path, monkeypatch, exc: BaseException
) -> None:
    real = BUILTINS[MINILM]
    monkeypatch.setitem(BUILTINS, MINILM, dataclasses.replace(real, prepare=_interrupting(exc)))
    with pytest.raises(type(exc)):
        prepare_builtin(MINILM, tmp_path)
    models = tmp_path / "models"
    assert list(models.iterdir()) == []  # no model folder, no temporary leftovers

    # the next run prepares it for real
    monkeypatch.setitem(BUILTINS, MINILM, real)
    dest = prepare_builtin(MINILM, tmp_path)
    assert (dest / READY_MARKER).exists()
    assert (dest / "model.safetensors").stat().st_size > 1_000_000


def test_a_folder_without_the_marker_is_rebuilt(tmp_path: Path) -> None:
    """A half-written folder (e.g. from a crash outside prepare_builtin) is not trusted."""
    dest = tmp_path / "models" / MINILM
    dest.mkdir(parents=True)
    (dest / "model.safetensors").write_bytes(b"half")
    assert prepare_builtin(MINILM, tmp_path) == dest
    assert (dest / READY_MARKER).exists()
    assert (dest / "model.safetensors").stat().st_size > 1_000_000
