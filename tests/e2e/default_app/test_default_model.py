"""`make run`'s default config answers a factual question with SmolLM2 (float32, CPU)."""

from __future__ import annotations

import json

import openai

from tests.helpers import curl_sse


def test_capital_of_france_is_paris(default_app):
    client = openai.OpenAI(base_url=f"{default_app}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=32,
        temperature=0,
    )
    assert "Paris" in answer.choices[0].message.content


def test_curl_streams_the_answer(default_app):
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32,
        "temperature": 0,
        "stream": True,
    }
    events = curl_sse(f"{default_app}/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in map(json.loads, events[:-1])
        if c["choices"]
    )
    assert "Paris" in text
