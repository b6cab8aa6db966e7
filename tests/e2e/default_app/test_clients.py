"""The default app through LangChain's OpenAI clients, as LangChain users call them.

(LlamaIndex's ``OpenAILike`` is not tested yet: its OpenAI package wants
``openai<3``, so adding it would move the whole suite to the older SDK.)
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field


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


def test_an_unknown_model_raises_the_sdk_error(default_app: str) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        chat(default_app, "nope", max_tokens=4).invoke("hi")
