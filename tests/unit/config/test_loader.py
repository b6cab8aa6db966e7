from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmserve.config import ConfigError, ConfigIssue, load_config, validate_config_dict

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[3]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TINY = """
models:
  - id: tiny
    source: builtin:tiny-llama
"""


def _issues(path: Path) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.issues


def test_the_configs_folder_is_found() -> None:
    assert {p.name for p in CONFIGS} >= {
        "default.yaml",
        "tiny.yaml",
        "gpu-tp2.yaml",
        "gpu-tp8-pp2.yaml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    assert load_config(path).served_ids()


def test_default_config() -> None:
    app = load_config(REPO / "configs" / "default.yaml")
    assert app.served_ids() == ["smollm2", "minilm", "minilm-rerank", "rag-docs"]
    model = app.get_model("smollm2")
    assert model.source == "builtin:smollm2-135m-instruct"
    assert model.device == "cpu"
    assert model.engine_kwargs == {"dtype": "float32", "max_model_len": 4096, "enforce_eager": True}
    assert model.env_vars == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert app.get_reranker("minilm-rerank").kind == "embedding"
    retriever = app.get_retriever("docs")
    assert retriever.uri == str(REPO / ".llmserve" / "index" / "docs")
    assert retriever.corpus.paths == [str(REPO / "docs")]
    pipeline = app.get_pipeline("rag-docs")
    assert (pipeline.retriever, pipeline.reranker, pipeline.generator) == (
        "docs",
        "minilm-rerank",
        "smollm2",
    )


def test_gpu_configs() -> None:
    tp2 = load_config(REPO / "configs" / "gpu-tp2.yaml").models[0]
    assert (tp2.device, tp2.parallelism.world_size) == ("gpu", 2)
    assert tp2.parallelism.placement_strategy == "STRICT_PACK"
    scaling = tp2.deployment.autoscaling_config
    assert scaling is not None
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 4)

    big = load_config(REPO / "configs" / "gpu-tp8-pp2.yaml").models[0]
    assert big.parallelism.world_size == 16
    assert big.parallelism.placement_bundles("gpu") == [{"GPU": 1.0}] * 16


def test_relative_paths_resolve_against_the_config_folder(write_config, tmp_path) -> None:
    path = write_config(
        """
home: cache
embedders: [{id: e, source: builtin:all-minilm-l6-v2}]
retrievers:
  - id: local
    embedder: e
    uri: ./index
    corpus: {paths: [docs, "notes/**/*.md", /abs/file.txt]}
  - id: remote
    embedder: e
    uri: s3://bucket/index
    corpus: {paths: ["~/docs"]}
""",
    )
    app = load_config(path)
    local, remote = app.retrievers
    assert local.uri == str(tmp_path / "index")
    assert local.corpus.paths == [
        str(tmp_path / "docs"),
        str(tmp_path / "notes/**/*.md"),
        "/abs/file.txt",
    ]
    assert remote.uri == "s3://bucket/index"
    assert remote.corpus.paths == [str(Path("~/docs").expanduser())]
    assert app.home_dir() == tmp_path / "cache"


def test_home_dir_defaults(monkeypatch, write_config) -> None:
    app = load_config(write_config(TINY))
    monkeypatch.setenv("LLMSERVE_HOME", "/data/llmserve")
    assert app.home_dir() == Path("/data/llmserve")
    monkeypatch.delenv("LLMSERVE_HOME")
    assert app.home_dir() == Path.home() / ".cache" / "llmserve"


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "nope.yaml"
    assert _issues(path) == [ConfigIssue("<file>", f"{path}: no such file")]


def test_a_folder_is_not_a_config(tmp_path) -> None:
    [issue] = _issues(tmp_path)
    assert issue.path == "<file>"
    assert str(tmp_path) in issue.message


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_empty_file(write_config, text: str) -> None:
    path = write_config(text)
    [issue] = _issues(path)
    assert issue.path == "<file>"
    assert issue.message.startswith(f"{path} is empty")


def test_bad_yaml(write_config) -> None:
    path = write_config("models:\n  - id: tiny\n    source: [builtin:tiny-llama\n")
    [issue] = _issues(path)
    assert issue.path == "<file>"
    assert issue.message.startswith(f"{path}: invalid YAML at line 4, column 1:")


def test_bad_yaml_indentation(write_config) -> None:
    path = write_config("models:\n  - id: tiny\n   source: x\n")
    [issue] = _issues(path)
    assert "invalid YAML at line 3" in issue.message


def test_duplicate_yaml_key(write_config) -> None:
    path = write_config(TINY + "models: []\n")
    [issue] = _issues(path)
    assert issue == ConfigIssue(
        "<file>", f"{path}: invalid YAML at line 5, column 1: duplicate key 'models'"
    )


def test_yaml_that_is_not_a_mapping(write_config) -> None:
    assert _issues(write_config("- a\n- b\n")) == [
        ConfigIssue("<root>", "expected a mapping of settings, got list")
    ]


def test_validation_errors_from_a_file(write_config) -> None:
    path = write_config(TINY + "    engine_kwargs: {max_model_len: abc}\nextra: 1\n")
    issues = _issues(path)
    assert [i.path for i in issues] == ["models[0].engine_kwargs.max_model_len", "extra"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_configs_survive_a_json_round_trip(path: Path) -> None:
    # Ray Serve's `serve deploy` passes the config on as plain JSON.
    app = load_config(path)
    again = validate_config_dict(json.loads(app.model_dump_json()), base_dir=Path("/elsewhere"))
    assert again == app
