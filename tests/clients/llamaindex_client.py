"""LlamaIndex's ``OpenAILike`` against a running app, as a LlamaIndex user calls it.

Run by tests/e2e/default_app/test_clients.py with .venv-clients' Python (see
requirements.txt there); prints one JSON object with what each call returned.
"""

from __future__ import annotations

import json
import sys

from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike


def llm(base_url: str, model: str, chat: bool, max_tokens: int) -> OpenAILike:
    return OpenAILike(
        api_base=base_url,
        api_key="unused",
        model=model,
        is_chat_model=chat,
        temperature=0,
        max_tokens=max_tokens,
        max_retries=0,
    )


def main(base_url: str) -> None:
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Say hello."),
    ]
    chat = llm(base_url, "smollm2", chat=True, max_tokens=12)
    answer = chat.chat(messages)
    completer = llm(base_url, "smollm2", chat=False, max_tokens=12)
    completion = completer.complete("The capital of France is")
    rag = llm(base_url, "rag-docs", chat=True, max_tokens=16).chat(
        [ChatMessage(role="user", content="Which command builds the RAG index?")]
    )
    print(
        json.dumps(
            {
                "chat": answer.message.content,
                "chat_completion_tokens": answer.raw.usage.completion_tokens,
                "stream_chat": [c.delta for c in chat.stream_chat(messages)],
                "complete": completion.text,
                "complete_object": completion.raw.object,
                "stream_complete": [
                    c.delta for c in completer.stream_complete("The capital of France is")
                ],
                "rag": rag.message.content,
                "rag_sources": rag.raw.model_extra["sources"],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
