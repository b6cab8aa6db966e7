"""Tool calling on the default app's SmolLM2 through the OpenAI SDK.

A named function and ``"required"`` make vLLM constrain the output to the
tools' JSON schemas, so even a 135M model returns arguments that parse and
validate; configs/default.yaml sets the hermes tool parser this needs.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a timezone.",
            "parameters": TIME,
        },
    },
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def client(default_app):
    return openai.OpenAI(base_url=f"{default_app}/v1", api_key="unused", max_retries=0)


def ask(client, tool_choice, **kwargs):
    return client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        tools=TOOLS,
        tool_choice=tool_choice,
        max_tokens=96,
        temperature=0,
        **kwargs,
    )


def streamed_calls(stream) -> list[dict]:
    """Tool calls put together from stream deltas, the way clients do it."""
    calls: dict[int, dict] = {}
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = call["id"] or delta.id
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
    return [calls[i] for i in sorted(calls)]


def check_arguments(name: str, arguments: str) -> dict:
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed


def test_named_tool_choice_calls_that_function(client):
    answer = ask(client, NAMED)
    calls = answer.choices[0].message.tool_calls
    assert len(calls) == 1
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert calls[0].id
    check_arguments("get_weather", calls[0].function.arguments)


def test_named_tool_choice_streams_argument_deltas(client):
    calls = streamed_calls(ask(client, NAMED, stream=True))
    assert [c["name"] for c in calls] == ["get_weather"]
    assert calls[0]["id"]
    check_arguments("get_weather", calls[0]["arguments"])


def test_required_tool_choice_calls_a_listed_function(client):
    answer = ask(client, "required")
    calls = answer.choices[0].message.tool_calls
    assert calls
    for call in calls:
        check_arguments(call.function.name, call.function.arguments)


def test_required_tool_choice_streams(client):
    calls = streamed_calls(ask(client, "required", stream=True))
    assert calls
    for call in calls:
        check_arguments(call["name"], call["arguments"])


def test_auto_tool_choice_is_accepted(client):
    # The serving block enables "auto"; SmolLM2's chat template does not show
    # it the tools, so whether it calls one is up to the model. A call it
    # makes is held to the tool's schema all the same.
    message = ask(client, "auto").choices[0].message
    assert message.content or message.tool_calls
    for call in message.tool_calls or []:
        check_arguments(call.function.name, call.function.arguments)
