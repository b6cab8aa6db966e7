from __future__ import annotations

import pytest

from llmserve.config import AppConfig, ConfigError, ConfigIssue, validate_config_dict

pytestmark = pytest.mark.unit


def test_valid_rag_config(rag_data) -> None:
    app = validate_config_dict(rag_data)
    assert app.served_ids() == ["gen", "emb", "rr", "rag"]
    assert app.get_pipeline("rag").generator == "gen"
    assert app.get_retriever("docs").embedder == "emb"
    with pytest.raises(KeyError, match="no model with id 'emb'"):
        app.get_model("emb")


def test_validate_config_dict_does_not_change_its_input(rag_data, tmp_path) -> None:
    rag_data["retrievers"][0]["uri"] = "index"
    validate_config_dict(rag_data, base_dir=tmp_path)
    assert rag_data["retrievers"][0]["uri"] == "index"


def test_unknown_top_level_key(issues, rag_data) -> None:
    rag_data["modles"] = []
    assert issues(rag_data) == {"modles": "unknown key 'modles' (did you mean 'models'?)"}


def test_unknown_nested_key(issues, rag_data) -> None:
    rag_data["models"][0]["parallelism"] = {"tensor_parallel": 2}
    rag_data["retrievers"][0]["corpus"]["chunk_size"] = 100
    assert issues(rag_data) == {
        "models[0].parallelism.tensor_parallel": (
            "unknown key 'tensor_parallel' (did you mean 'tensor_parallel_size'?)"
        ),
        "retrievers[0].corpus.chunk_size": (
            "unknown key 'chunk_size' (did you mean 'chunk_tokens'?)"
        ),
    }


def test_missing_required_field(issues, rag_data) -> None:
    del rag_data["retrievers"][0]["corpus"]
    assert issues(rag_data) == {"retrievers[0].corpus": "required field is missing"}


def test_bad_values_name_the_input(issues, rag_data) -> None:
    rag_data["models"][0]["device"] = "tpu"
    rag_data["ingress"] = {"port": 70000, "route_prefix": "v1"}
    found = issues(rag_data)
    assert "'tpu'" in found["models[0].device"]
    assert "65535" in found["ingress.port"]
    assert found["ingress.route_prefix"] == "route_prefix must start with '/', got 'v1'"


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 129])
def test_ids_are_non_empty_without_whitespace(issues, rag_data, bad_id: str) -> None:
    rag_data["models"][0]["id"] = bad_id
    found = issues(rag_data)
    # The pipeline's generator now dangles too: both are reported.
    assert set(found) == {"models[0].id", "pipelines[0].generator"}


def test_duplicate_id_within_a_section(issues, rag_data) -> None:
    rag_data["models"].append({"id": "gen", "source": "builtin:smollm2-135m-instruct"})
    assert issues(rag_data) == {"models[1].id": "duplicate id 'gen' (already a model id)"}


def test_duplicate_id_across_sections(issues, rag_data) -> None:
    rag_data["pipelines"][0]["id"] = "emb"
    assert issues(rag_data) == {"pipelines[0].id": "duplicate id 'emb' (already an embedder id)"}


def test_duplicate_retriever_id(issues, rag_data) -> None:
    rag_data["retrievers"].append(dict(rag_data["retrievers"][0]))
    assert issues(rag_data) == {"retrievers[1].id": "duplicate id 'docs' (already a retriever id)"}


def test_retriever_ids_are_a_separate_namespace(rag_data) -> None:
    rag_data["retrievers"][0]["id"] = "gen"
    rag_data["pipelines"][0]["retriever"] = "gen"
    validate_config_dict(rag_data)


def test_dangling_references(issues, rag_data) -> None:
    rag_data["retrievers"][0]["embedder"] = "nope"
    rag_data["pipelines"][0].update(retriever="nope", reranker="nope", generator="nope")
    assert issues(rag_data) == {
        "retrievers[0].embedder": "unknown embedder 'nope' (known: emb)",
        "pipelines[0].retriever": "unknown retriever 'nope' (known: docs)",
        "pipelines[0].reranker": "unknown reranker 'nope' (known: rr)",
        "pipelines[0].generator": "unknown model 'nope' (known: gen)",
    }


def test_reference_to_the_wrong_kind(issues, rag_data) -> None:
    rag_data["pipelines"][0]["generator"] = "emb"
    rag_data["retrievers"][0]["embedder"] = "rr"
    assert issues(rag_data) == {
        "pipelines[0].generator": "'emb' is an embedder, not a model",
        "retrievers[0].embedder": "'rr' is a reranker, not an embedder",
    }


def test_reference_when_the_section_is_empty(issues, rag_data) -> None:
    del rag_data["rerankers"]
    assert issues(rag_data) == {
        "pipelines[0].reranker": "unknown reranker 'rr' (no rerankers are defined)"
    }


def test_reranker_is_optional(rag_data) -> None:
    del rag_data["pipelines"][0]["reranker"]
    assert validate_config_dict(rag_data).pipelines[0].reranker is None


def test_top_k_above_max_top_k(issues, rag_data) -> None:
    rag_data["pipelines"][0].update(top_k=60, top_n=70)
    assert issues(rag_data) == {
        "pipelines[0].top_k": "top_k (60) is greater than max_top_k (50)",
        "pipelines[0].top_n": "top_n (70) is greater than max_top_n (20)",
    }


def test_top_n_above_top_k(issues, rag_data) -> None:
    rag_data["pipelines"][0].update(top_k=3, top_n=4)
    assert issues(rag_data) == {"pipelines[0].top_n": "top_n (4) is greater than top_k (3)"}


def test_top_k_above_the_retrievers_limit(issues, rag_data) -> None:
    rag_data["retrievers"][0]["max_top_k"] = 10
    assert issues(rag_data) == {
        "pipelines[0].top_k": "top_k (20) is greater than max_top_k (10) of retriever 'docs'"
    }


def test_prompt_template_needs_both_placeholders(issues, rag_data) -> None:
    rag_data["pipelines"][0]["prompt_template"] = "Context: {context}"
    assert issues(rag_data) == {
        "pipelines[0].prompt_template": "prompt_template must contain {question}"
    }


def test_prompt_template_may_hold_other_braces(rag_data) -> None:
    template = 'Reply as JSON like {"answer": "..."}.\n{context}\n{question}'
    rag_data["pipelines"][0]["prompt_template"] = template
    assert validate_config_dict(rag_data).pipelines[0].prompt_template == template


def test_chunk_overlap_must_be_below_chunk_size(issues, rag_data) -> None:
    rag_data["retrievers"][0]["corpus"].update(chunk_tokens=50, chunk_overlap_tokens=50)
    assert issues(rag_data) == {
        "retrievers[0].corpus.chunk_overlap_tokens": (
            "chunk_overlap_tokens (50) must be less than chunk_tokens (50)"
        )
    }


@pytest.mark.parametrize("size", [0, -1])
def test_max_file_bytes_must_be_positive(issues, rag_data, size: int) -> None:
    rag_data["retrievers"][0]["corpus"]["max_file_bytes"] = size
    assert issues(rag_data) == {
        "retrievers[0].corpus.max_file_bytes": f"Input should be greater than 0 (got {size})"
    }


def test_max_file_bytes_default_is_the_indexers(rag_data) -> None:
    from llmserve.rag.documents import DEFAULT_MAX_FILE_BYTES

    corpus = validate_config_dict(rag_data).get_retriever("docs").corpus
    assert corpus.max_file_bytes == DEFAULT_MAX_FILE_BYTES


def test_metadata_fields_follow_the_store_rules(issues, rag_data) -> None:
    rag_data["retrievers"][0]["corpus"]["metadata_fields"] = ["year", "text", "bad-name"]
    found = issues(rag_data)
    assert sorted(found) == [
        "retrievers[0].corpus.metadata_fields[1]",
        "retrievers[0].corpus.metadata_fields[2]",
    ]
    assert "'text'" in found["retrievers[0].corpus.metadata_fields[1]"]


def test_nothing_to_serve(issues) -> None:
    message = issues({"ingress": {"port": 9000}})["<root>"]
    assert message.startswith("nothing to serve")


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config_dict(["models"])  # type: ignore[arg-type]
    assert info.value.issues == [ConfigIssue("<root>", "expected a mapping of settings, got list")]


def test_field_and_reference_errors_are_reported_together(issues, rag_data) -> None:
    rag_data["models"][0]["engine_kwargs"] = {"max_model_len": "abc"}
    rag_data["models"][0]["deployment"] = {"num_replicas": 0}
    rag_data["embedders"].append({"id": "gen", "source": "builtin:all-minilm-l6-v2"})
    rag_data["pipelines"][0]["retriever"] = "missing"
    rag_data["pipelines"][0]["prompt_template"] = "{question}"
    assert sorted(issues(rag_data)) == [
        "embedders[1].id",
        "models[0].deployment.num_replicas",
        "models[0].engine_kwargs.max_model_len",
        "pipelines[0].prompt_template",
        "pipelines[0].retriever",
    ]


def test_error_text_is_one_line_per_issue(rag_data) -> None:
    rag_data["models"][0]["source"] = "builtin:"
    rag_data["pipelines"][0]["generator"] = "x"
    with pytest.raises(ConfigError) as info:
        validate_config_dict(rag_data)
    assert str(info.value).splitlines() == [
        "models[0].source: 'builtin:' needs a model name, e.g. builtin:smollm2-135m-instruct",
        "pipelines[0].generator: unknown model 'x' (known: gen)",
    ]


def test_model_validate_reports_the_same_issues(rag_data) -> None:
    # Code that builds configs without the loader still gets every check.
    rag_data["pipelines"][0]["generator"] = "x"
    with pytest.raises(ValueError, match="unknown model 'x'"):
        AppConfig.model_validate(rag_data)


def test_env_var_values_accept_plain_numbers(rag_data) -> None:
    rag_data["models"][0]["env_vars"] = {"VLLM_CPU_KVCACHE_SPACE": 1, "RATIO": 0.5}
    app = validate_config_dict(rag_data)
    assert app.models[0].env_vars == {"VLLM_CPU_KVCACHE_SPACE": "1", "RATIO": "0.5"}


def test_env_var_names_are_checked(issues, rag_data) -> None:
    rag_data["models"][0]["env_vars"] = {"BAD NAME": "1", "FLAG": True}
    assert set(issues(rag_data)) == {
        "models[0].env_vars.BAD NAME[key]",
        "models[0].env_vars.FLAG",
    }


STORE = "VLLM_ENABLE_RESPONSES_API_STORE"


@pytest.mark.parametrize(
    ("deployment", "fused", "ingress_deployment"),
    [
        ({"num_replicas": 2}, False, {}),
        ({"autoscaling_config": {"min_replicas": 1, "max_replicas": 3}}, False, {}),
        ({}, True, {"num_replicas": 2}),
    ],
)
def test_a_responses_store_needs_exactly_one_replica(
    issues, rag_data, deployment, fused, ingress_deployment
) -> None:
    """vLLM keeps stored responses in one process: previous_response_id would miss them
    on every other replica."""
    model = rag_data["models"][0]
    model.update(env_vars={STORE: "1"}, deployment=deployment)
    if fused:
        rag_data["ingress"] = {"fused_model": "gen", "deployment": ingress_deployment}
    found = issues(rag_data)
    assert list(found) == [f"models[0].env_vars.{STORE}"]
    assert "exactly one replica" in found[f"models[0].env_vars.{STORE}"]


def test_a_responses_store_on_one_replica_is_valid(rag_data) -> None:
    rag_data["models"][0].update(env_vars={STORE: "1"}, deployment={"num_replicas": 1})
    rag_data["ingress"] = {"fused_model": "gen"}
    validate_config_dict(rag_data)
    rag_data["models"][0]["env_vars"][STORE] = "0"  # off: any replica count
    rag_data["ingress"] = {"deployment": {"num_replicas": 2}}
    rag_data["models"][0]["deployment"] = {"num_replicas": 2}
    validate_config_dict(rag_data)
