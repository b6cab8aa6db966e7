"""Retrieval-augmented generation: embedders, rerankers, retrievers and pipelines."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from llmserve.config.common import Identifier
from llmserve.config.deployment import (
    PipelineDeploymentConfig,
    PoolingDeploymentConfig,
    RetrieverDeploymentConfig,
)
from llmserve.config.errors import Loc, issues_error
from llmserve.config.limits import EmbedderLimits, RerankerLimits
from llmserve.config.model import EngineConfig
from llmserve.literals import QueryMode, SearchMode

RerankerKind = Literal["cross-encoder", "embedding"]
ContextOrder = Literal["best_first", "best_last"]


DEFAULT_SYSTEM_PROMPT = (
    "Answer the question using only the numbered sources. Cite every source you use "
    "by its number, like [1]. If the sources do not contain the answer, say so."
)
DEFAULT_PROMPT_TEMPLATE = "Sources:\n{context}\n\nQuestion: {question}"


class EmbedderConfig(EngineConfig):
    """An embedding model, served on /v1/embeddings and used by retrievers."""

    model_config = ConfigDict(extra="forbid")

    deployment: PoolingDeploymentConfig = Field(
        default_factory=PoolingDeploymentConfig, description="Ray Serve settings of the replicas."
    )
    max_batch_size: int = Field(
        32, gt=0, description="Most inputs merged into one engine call (serve.batch)."
    )
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, description="Seconds to wait for a batch to fill before running it."
    )
    limits: EmbedderLimits = Field(
        default_factory=EmbedderLimits,
        description="Per-request cost caps of /v1/embeddings, checked by the ingress.",
    )


class RerankerConfig(EngineConfig):
    """A model that rescores retrieved chunks against the query."""

    model_config = ConfigDict(extra="forbid")

    deployment: PoolingDeploymentConfig = Field(
        default_factory=PoolingDeploymentConfig, description="Ray Serve settings of the replicas."
    )
    kind: RerankerKind = Field(
        "embedding",
        description="cross-encoder: a cross-encoder model; embedding: cosine similarity of "
        "embeddings. Both use vLLM's score API.",
    )
    limits: RerankerLimits = Field(
        default_factory=RerankerLimits,
        description="Per-request cost caps of /v1/rerank, checked by the ingress.",
    )


def _metadata_field_issues(names: list[str]) -> list[tuple[Loc, str]]:
    if not names:
        return []
    # The store owns the column rules (e.g. reserved names); imported late
    # because llmserve.rag pulls in pyarrow, which most config use never needs.
    from llmserve.rag.store import validate_metadata_fields

    issues: list[tuple[Loc, str]] = []
    for i, name in enumerate(names):
        try:
            validate_metadata_fields([name])
        except ValueError as exc:
            issues.append((("metadata_fields", i), str(exc)))
        if name in names[:i]:
            issues.append((("metadata_fields", i), f"duplicate metadata field '{name}'"))
    return issues


class CorpusConfig(BaseModel):
    """The documents a retriever indexes and how they are chunked."""

    model_config = ConfigDict(extra="forbid")

    paths: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        ...,
        min_length=1,
        description="Files, folders or globs; relative ones are relative to the config file.",
    )
    chunk_tokens: int = Field(200, gt=0, description="Target chunk length in tokens.")
    chunk_overlap_tokens: int = Field(
        40, ge=0, description="Tokens shared by consecutive chunks; less than chunk_tokens."
    )
    metadata_fields: list[str] = Field(
        default_factory=list,
        description="User metadata keys (e.g. from .jsonl lines) stored as filterable columns.",
    )
    base_url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="Where the corpus is published: a citation's url is base_url followed "
        "by the document's source path (e.g. https://github.com/ORG/REPO/blob/main/ for "
        "docs/cpu.md). null: llmserve://RETRIEVER/SOURCE.",
    )
    # Same default as llmserve.rag.documents.DEFAULT_MAX_FILE_BYTES (not imported
    # here: llmserve.rag pulls in pyarrow, which most config use never needs).
    max_file_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        description="Largest corpus file indexed, in bytes; a bigger one is skipped and "
        "reported. Indexing reads and parses a whole file in memory, so this bounds what one "
        "file can cost.",
    )

    @model_validator(mode="after")
    def _check(self) -> CorpusConfig:
        issues: list[tuple[Loc, str]] = []
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            issues.append(
                (
                    ("chunk_overlap_tokens",),
                    f"chunk_overlap_tokens ({self.chunk_overlap_tokens}) must be less than "
                    f"chunk_tokens ({self.chunk_tokens})",
                )
            )
        issues.extend(_metadata_field_issues(self.metadata_fields))
        if issues:
            raise issues_error(type(self).__name__, issues)
        return self


class RetrieverConfig(BaseModel):
    """A LanceDB index over a corpus, searchable by vector, BM25 or both."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier = Field(..., description="Name pipelines use to refer to this retriever.")
    embedder: str = Field(..., description="id of the embedder that embeds chunks and queries.")
    uri: str = Field(
        ...,
        min_length=1,
        description="LanceDB URI: a folder (relative to the config file), s3://, gs:// or db://.",
    )
    table: str = Field(
        "chunks", pattern=r"^[A-Za-z0-9_.-]+$", description="LanceDB table holding the chunks."
    )
    corpus: CorpusConfig = Field(..., description="What to index and how to chunk it.")
    default_mode: SearchMode = Field(
        "hybrid", description="Search mode used when a request does not choose one."
    )
    max_top_k: int = Field(50, gt=0, description="Largest top_k a request may ask for.")
    deployment: RetrieverDeploymentConfig = Field(
        default_factory=RetrieverDeploymentConfig,
        description="Ray Serve settings of the retriever.",
    )


class RagSampling(BaseModel):
    """A pipeline's default sampling: sent to the generator unless the request sets it."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    repetition_penalty: float | None = Field(
        None,
        gt=0,
        le=2,
        description="vLLM's repetition penalty: above 1 discourages repeating prompt and "
        "answer tokens.",
    )
    frequency_penalty: float | None = Field(
        None, ge=-2, le=2, description="OpenAI's frequency penalty."
    )
    presence_penalty: float | None = Field(
        None, ge=-2, le=2, description="OpenAI's presence penalty."
    )

    def defaults(self) -> dict[str, float]:
        """The settings that are set, by request field name."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PipelineConfig(BaseModel):
    """Retrieve, optionally rerank, then generate an answer citing the sources."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier = Field(..., description="Model name clients use to call the pipeline.")
    retriever: str = Field(..., description="id of the retriever to search.")
    top_k: int = Field(20, gt=0, description="Chunks retrieved per question by default.")
    max_top_k: int = Field(
        50,
        gt=0,
        description=(
            "Largest top_k a request may ask for (`rag.top_k`, /v1/retrieve `top_k`): chunks "
            "retrieved, and reranked, per question. A per-request cost cap like the "
            "generator's `limits`, checked by the ingress before the request queues."
        ),
    )
    reranker: str | None = Field(None, description="id of a reranker; null keeps retrieval order.")
    top_n: int = Field(4, gt=0, description="Chunks kept (after reranking) for the prompt.")
    max_top_n: int = Field(
        20,
        gt=0,
        description=(
            "Largest top_n (`rag.top_n`) a request may ask for; checked by the ingress "
            "before the request queues, like max_top_k."
        ),
    )
    min_score: float | None = Field(
        None,
        description="Drop chunks whose reranker score is below this (no reranker: unused); "
        "null keeps all top_n.",
    )
    generator: str = Field(..., description="id of the model that writes the answer.")
    system_prompt: str = Field(
        DEFAULT_SYSTEM_PROMPT, description="System message for the generator."
    )
    prompt_template: str = Field(
        DEFAULT_PROMPT_TEMPLATE,
        description="User message; {context} and {question} are filled in, other braces kept.",
    )
    context_token_budget: int = Field(
        1024, gt=0, description="Most tokens of source text put into the prompt."
    )
    context_order: ContextOrder = Field(
        "best_first",
        description="Order of the numbered sources in the prompt: best_first ([1] first) or "
        "best_last ([1] last, nearest the question); the numbers stay the rank either way.",
    )
    sampling: RagSampling = Field(
        default_factory=lambda: RagSampling(),
        description="Sampling settings the generator gets when a request does not set them.",
    )
    query_mode: QueryMode = Field(
        "history",
        description="How the search query is built from a conversation: history (the "
        "default: the last query_history_turns user messages before the question folded in, "
        "no model call; measured in docs/rag.md), last (the last user message alone) or "
        "rewrite (the generator rewrites the question into a standalone one; skipped without "
        "history; falls back to history on failure or timeout). Without history all three "
        "search the question as it is.",
    )
    query_history_turns: int = Field(
        2,
        ge=1,
        le=20,
        description="Earlier user turns that history folds into the query, and that rewrite "
        "shows the generator (with the answers between them).",
    )
    rewrite_model: str | None = Field(
        None,
        description="Model name the rewrite asks: null for the generator, or one of the "
        "generator's LoRA adapters (served by the same replicas).",
    )
    rewrite_max_tokens: int = Field(
        48, gt=0, le=512, description="Most tokens a rewritten question may take."
    )
    rewrite_timeout_s: float = Field(
        8.0,
        gt=0,
        description="Longest the rewrite may take; then the query falls back to history.",
    )
    deployment: PipelineDeploymentConfig = Field(
        default_factory=PipelineDeploymentConfig,
        description=(
            "Ray Serve settings of the pipeline router; with a fused generator the router "
            "runs in the ingress, which enforces max_ongoing/max_queued_requests."
        ),
    )
    request_timeout_s: float | None = Field(
        None, gt=0, description="Longest a request may take end to end; null: the ingress's."
    )

    @field_validator("prompt_template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        missing = [p for p in ("{context}", "{question}") if p not in value]
        if missing:
            raise ValueError(f"prompt_template must contain {' and '.join(missing)}")
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> PipelineConfig:
        issues: dict[Loc, str] = {}
        for name, limit in (("top_k", "max_top_k"), ("top_n", "max_top_n"), ("top_n", "top_k")):
            value, bound = getattr(self, name), getattr(self, limit)
            # One complaint per field: fixing the first usually fixes the rest.
            if value > bound and (name,) not in issues:
                issues[(name,)] = f"{name} ({value}) is greater than {limit} ({bound})"
        if issues:
            raise issues_error(type(self).__name__, issues.items())
        return self
