"""OpenAI's Responses API on the default app's SmolLM2, through the OpenAI SDK.

vLLM's own ``OpenAIServingResponses`` answers; llmserve routes and relays.
"""

from __future__ import annotations

import openai
import pytest

MODEL = "smollm2"


@pytest.fixture(scope="module")
def client(default_app):
    return openai.OpenAI(base_url=f"{default_app}/v1", api_key="unused", max_retries=0)


def test_a_response_answers_with_text_and_usage(client) -> None:
    response = client.responses.create(
        model=MODEL, input="Say hello.", max_output_tokens=16, temperature=0
    )
    # Cut at max_output_tokens is "incomplete", as OpenAI reports it.
    assert response.status == "completed" or (
        response.status == "incomplete"
        and response.incomplete_details.reason == "max_output_tokens"
    ), response
    assert response.model == MODEL
    assert response.output_text.strip()
    assert response.usage.output_tokens <= 16
    assert response.usage.input_tokens > 0


def test_a_streamed_response_sends_typed_events_and_a_final_response(client) -> None:
    events = list(
        client.responses.create(
            model=MODEL, input="Count to five.", max_output_tokens=16, temperature=0, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] in ("response.completed", "response.incomplete"), kinds
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == events[-1].response.output_text


def test_instructions_and_message_input_are_accepted(client) -> None:
    response = client.responses.create(
        model=MODEL,
        instructions="Answer in one word.",
        input=[{"role": "user", "content": "What colour is the sky?"}],
        max_output_tokens=8,
        temperature=0,
    )
    assert response.output_text.strip()


def test_an_unknown_model_is_404_and_a_bad_field_400(client) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="hi", max_output_tokens=4)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="hi", max_output_tokens=-1)
