"""Checks that span several components: unique ids and references between them.

They work on plain mappings, not models, so that they can also run on raw
data that failed field validation and still report what they can.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from llmserve.config.deployment import DeploymentConfig
from llmserve.config.errors import Loc
from llmserve.config.rag import PipelineConfig, RetrieverConfig
from llmserve.config.tenants import find_tenant_model_issues

# Sections whose ids share one namespace: they are all model names to clients.
SERVED_SECTIONS = ("models", "embedders", "rerankers", "pipelines")
_KIND = {
    "models": "model",
    "embedders": "embedder",
    "rerankers": "reranker",
    "pipelines": "pipeline",
    "retrievers": "retriever",
}

Issues = list[tuple[Loc, str]]


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _items(data: Mapping[str, Any], section: str) -> list[tuple[int, Mapping[str, Any]]]:
    items = data.get(section)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, Mapping)]


def _get(item: Mapping[str, Any], model: type[BaseModel], name: str) -> Any:
    if name in item:
        return item[name]
    return model.model_fields[name].get_default(call_default_factory=True)


def _collect_ids(data: Mapping[str, Any], sections: tuple[str, ...], issues: Issues) -> dict:
    owners: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for section in sections:
        for i, item in _items(data, section):
            id_ = item.get("id")
            if not isinstance(id_, str):
                continue
            if id_ in owners:
                first = _KIND[owners[id_][0]]
                issues.append(
                    ((section, i, "id"), f"duplicate id '{id_}' (already {_a(first)} id)")
                )
            else:
                owners[id_] = (section, item)
    return owners


def _check_ref(value: Any, section: str, owners: dict, loc: Loc, issues: Issues) -> Any:
    """Returns the referenced item, or None after recording why there is none."""
    if not isinstance(value, str):
        return None  # a type error that field validation reports
    kind = _KIND[section]
    if value in owners:
        owner_section, item = owners[value]
        if owner_section == section:
            return item
        issues.append((loc, f"'{value}' is {_a(_KIND[owner_section])}, not {_a(kind)}"))
        return None
    known = sorted(id_ for id_, (s, _) in owners.items() if s == section)
    listing = f"known: {', '.join(known)}" if known else f"no {section} are defined"
    issues.append((loc, f"unknown {kind} '{value}' ({listing})"))
    return None


def _check_adapter_ids(data: Mapping[str, Any], served: dict, issues: Issues) -> None:
    """LoRA adapter ids are model names to clients too: unique among all of them."""
    seen: dict[str, Any] = {}
    for i, item in _items(data, "models"):
        lora = item.get("lora")
        adapters = lora.get("adapters") if isinstance(lora, Mapping) else None
        for name in adapters if isinstance(adapters, Mapping) else []:
            loc = ("models", i, "lora", "adapters", name)
            if name in served:
                kind = _KIND[served[name][0]]
                issues.append((loc, f"duplicate id '{name}' (already {_a(kind)} id)"))
            elif name in seen:
                issues.append(
                    (loc, f"duplicate id '{name}' (already an adapter of '{seen[name]}')")
                )
            else:
                seen[name] = item.get("id")


def _adapter_ids(data: Mapping[str, Any]) -> list[str]:
    ids = []
    for _, item in _items(data, "models"):
        lora = item.get("lora")
        adapters = lora.get("adapters") if isinstance(lora, Mapping) else None
        ids += [str(name) for name in (adapters if isinstance(adapters, Mapping) else [])]
    return ids


def find_reference_issues(data: Mapping[str, Any]) -> Issues:
    """Duplicate ids, dangling references and limits that depend on another component."""
    issues: Issues = []
    served = _collect_ids(data, SERVED_SECTIONS, issues)
    retrievers = _collect_ids(data, ("retrievers",), issues)
    _check_adapter_ids(data, served, issues)

    for i, item in _items(data, "retrievers"):
        _check_ref(item.get("embedder"), "embedders", served, ("retrievers", i, "embedder"), issues)

    for i, item in _items(data, "pipelines"):
        loc = ("pipelines", i)
        retriever = _check_ref(
            item.get("retriever"), "retrievers", retrievers, (*loc, "retriever"), issues
        )
        if item.get("reranker") is not None:
            _check_ref(item["reranker"], "rerankers", served, (*loc, "reranker"), issues)
        generator = _check_ref(item.get("generator"), "models", served, (*loc, "generator"), issues)
        if generator is not None:
            _check_rewrite_model(item, generator, (*loc, "rewrite_model"), issues)
        if retriever is not None:
            top_k = _get(item, PipelineConfig, "top_k")
            own_limit = _get(item, PipelineConfig, "max_top_k")
            limit = _get(retriever, RetrieverConfig, "max_top_k")
            numbers = all(isinstance(n, int) for n in (top_k, own_limit, limit))
            # Above its own max_top_k is already reported by the pipeline itself.
            if numbers and limit < top_k <= own_limit:
                issues.append(
                    (
                        (*loc, "top_k"),
                        f"top_k ({top_k}) is greater than max_top_k ({limit}) "
                        f"of retriever '{item['retriever']}'",
                    )
                )

    ingress = data.get("ingress")
    if isinstance(ingress, Mapping) and ingress.get("fused_model") is not None:
        _check_ref(ingress["fused_model"], "models", served, ("ingress", "fused_model"), issues)

    issues += find_tenant_model_issues(data, [*served, *_adapter_ids(data)])
    _check_responses_store(data, issues)
    if all(isinstance(data.get(s, []), list) and not data.get(s) for s in SERVED_SECTIONS):
        issues.append(
            ((), "nothing to serve: define at least one model, embedder, reranker or pipeline")
        )
    return issues


def _check_rewrite_model(
    pipeline: Mapping[str, Any], generator: Mapping[str, Any], loc: Loc, issues: Issues
) -> None:
    """A rewrite runs on the generator's replicas (the router's one generator client),
    so it may name the generator or one of its LoRA adapters, nothing else."""
    name = pipeline.get("rewrite_model")
    if not isinstance(name, str) or name == generator.get("id"):
        return
    lora = generator.get("lora")
    adapters = lora.get("adapters") if isinstance(lora, Mapping) else None
    if isinstance(adapters, Mapping) and name in adapters:
        return
    issues.append(
        (
            loc,
            f"rewrite_model '{name}' must be the generator '{generator.get('id')}' "
            "or one of its LoRA adapters",
        )
    )


RESPONSES_STORE = "VLLM_ENABLE_RESPONSES_API_STORE"


def _check_responses_store(data: Mapping[str, Any], issues: Issues) -> None:
    """vLLM's Responses store (``previous_response_id``) is one process's memory, so a
    model that stores responses must have exactly one replica: the ingress's when it is
    the fused model, its own otherwise."""
    raw_ingress = data.get("ingress")
    ingress: Mapping[str, Any] = raw_ingress if isinstance(raw_ingress, Mapping) else {}
    for i, model in _items(data, "models"):
        env = model.get("env_vars")
        if not isinstance(env, Mapping) or str(env.get(RESPONSES_STORE, "0")) in ("0", ""):
            continue
        fused = model.get("id") is not None and ingress.get("fused_model") == model.get("id")
        deployment = (ingress if fused else model).get("deployment") or {}
        most = _most_replicas(deployment)
        if most is not None and most != 1:
            where = "the ingress (which runs this fused model)" if fused else "this model"
            issues.append(
                (
                    ("models", i, "env_vars", RESPONSES_STORE),
                    f"vLLM keeps stored responses in one replica's memory, so {where} must "
                    "have exactly one replica (num_replicas: 1, no autoscaling_config) for "
                    "previous_response_id to find them",
                )
            )


def _most_replicas(deployment: Any) -> int | None:
    """``DeploymentConfig.replica_bounds().max`` of a raw deployment block; None when its
    replica settings are invalid (the block's own validation reports why)."""
    if not isinstance(deployment, Mapping):
        return None
    replicas = {k: deployment[k] for k in _REPLICA_FIELDS if k in deployment}
    try:
        return DeploymentConfig.model_validate(replicas).replica_bounds().max
    except ValidationError:
        return None


# The fields replica_bounds reads: the rest of a block (possibly invalid) does not matter here.
_REPLICA_FIELDS = ("num_replicas", "autoscaling_config")
