"""The default app through LangChain's OpenAI clients and LlamaIndex's ``OpenAILike``,
as their users call them.

LlamaIndex runs from its own environment, ``.venv-clients`` (``make test`` installs
it; tests/clients/requirements.txt says why it cannot share the server's).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from tests.conftest import ROOT


def chat(default_app: str, model: str, **kw) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{default_app}/v1",
        api_key="unused",
        model=model,
        temperature=0,
        max_retries=0,
        **kw,
    )


def test_invoke_and_stream_a_model(default_app: str) -> None:
    llm = chat(default_app, "smollm2", max_tokens=12)
    answer = llm.invoke([SystemMessage("Be brief."), HumanMessage("Say hello.")])
    assert isinstance(answer, AIMessage) and answer.content.strip()
    assert answer.usage_metadata["output_tokens"] <= 12
    streamed = "".join(chunk.content for chunk in llm.stream("Say hello."))
    assert streamed == llm.invoke("Say hello.").content


class Weather(BaseModel):
    """The current weather in a city."""

    city: str = Field(max_length=40)
    unit: str = Field(pattern="^(celsius|fahrenheit)$")


def test_a_bound_tool_comes_back_as_a_parsed_tool_call(default_app: str) -> None:
    llm = chat(default_app, "smollm2", max_tokens=64).bind_tools([Weather], tool_choice="Weather")
    answer = llm.invoke("What is the weather in Paris, in celsius?")
    [call] = answer.tool_calls
    assert call["name"] == "Weather"
    Weather.model_validate(call["args"])


def test_structured_output_comes_back_as_the_pydantic_model(default_app: str) -> None:
    llm = chat(default_app, "smollm2", max_tokens=64).with_structured_output(
        Weather, method="json_schema"
    )
    answer = llm.invoke("What is the weather in Paris, in celsius?")
    assert isinstance(answer, Weather)


def test_embeddings_of_a_query_and_documents(default_app: str) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=f"{default_app}/v1",
        api_key="unused",
        model="minilm",
        # Its token-length check needs tiktoken's encodings, downloaded from the internet.
        check_embedding_ctx_length=False,
    )
    query = embeddings.embed_query("What is llmserve?")
    documents = embeddings.embed_documents(["Ray Serve", "vLLM engines"])
    assert len(documents) == 2
    assert {len(query), *map(len, documents)} == {384}  # all-MiniLM-L6-v2


def test_a_rag_pipeline_is_a_chat_model(default_app: str) -> None:
    answer = chat(default_app, "rag-docs", max_tokens=16).invoke(
        "What does llmserve answer when it is overloaded?"
    )
    assert answer.content.strip()


CITING_QUESTION = "Which environment variable sets the size of the KV cache when running on CPU?"
# The generator is held to this answer (vLLM's structured_outputs regex, passed through
# like any sampling field), so the test does not depend on whether the 135M model cites.
CITING_ANSWER = "VLLM_CPU_KVCACHE_SPACE sets it [1]; see also [2]."
FORCED = {"structured_outputs": {"regex": re.escape(CITING_ANSWER).replace("\\ ", " ")}}


def _citations(message: AIMessage) -> list[dict]:
    """LangChain's standard citations of a message's text blocks."""
    return [
        annotation
        for block in message.content_blocks
        if block["type"] == "text"
        for annotation in block.get("annotations", [])
    ]


def test_langchain_keeps_the_citations_on_the_responses_api_only(default_app: str) -> None:
    """ChatOpenAI builds its Chat Completions message from the role, content and tool
    calls alone: the annotations (and ``sources``) are lost. On the Responses API it
    keeps each ``file_citation`` (as a standard ``citation``) and the ``file_search_call``
    with the sources' text (as a ``server_tool_result``), whole and streamed."""
    on_chat = chat(default_app, "rag-docs", max_tokens=64, extra_body=FORCED)
    lost = on_chat.invoke(CITING_QUESTION)
    assert lost.content == CITING_ANSWER and _citations(lost) == []
    assert "annotations" not in str(lost.model_dump())

    llm = chat(default_app, "rag-docs", max_tokens=64, use_responses_api=True, extra_body=FORCED)
    answer = llm.invoke(CITING_QUESTION)
    [text] = [b for b in answer.content_blocks if b["type"] == "text"]
    assert text["text"] == CITING_ANSWER
    citations = _citations(answer)
    assert [c["type"] for c in citations] == ["citation", "citation"]
    starts = [c["extras"]["file_index"] for c in citations]
    assert starts == [CITING_ANSWER.index("[1]"), CITING_ANSWER.index("[2]")]
    assert all(c["title"].startswith("docs/") for c in citations)
    [result] = [b for b in answer.content_blocks if b["type"] == "server_tool_result"]
    assert {r["file_id"] for r in result["output"]} >= {c["extras"]["file_id"] for c in citations}

    streamed = None
    for chunk in llm.stream(CITING_QUESTION):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and _citations(streamed) == citations


def test_an_unknown_model_raises_the_sdk_error(default_app: str) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        chat(default_app, "nope", max_tokens=4).invoke("hi")


def test_llamaindex_chats_completes_and_streams(default_app: str) -> None:
    python = ROOT / ".venv-clients" / "bin" / "python"
    assert python.exists(), "LlamaIndex's environment is missing: run `make test`, which makes it"
    run = subprocess.run(
        [python, ROOT / "tests" / "clients" / "llamaindex_client.py", f"{default_app}/v1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)
    assert seen["chat"].strip() and seen["chat_completion_tokens"] <= 12
    # At temperature 0 the streamed deltas add up to the whole answer.
    assert len(seen["stream_chat"]) > 1 and "".join(seen["stream_chat"]) == seen["chat"]
    assert seen["complete"].strip() and seen["complete_object"] == "text_completion"
    assert "".join(seen["stream_complete"]) == seen["complete"]
    assert seen["rag"].strip()
    assert [s["id"] for s in seen["rag_sources"]] == list(range(1, len(seen["rag_sources"]) + 1))
