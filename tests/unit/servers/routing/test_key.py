"""The routing key: what two requests' prompts share in the engine's prefix cache."""

from __future__ import annotations

import pytest

from llmserve.servers.protocol import NO_META, Endpoint, RequestMeta
from llmserve.servers.routing.key import routing_key

pytestmark = pytest.mark.unit

SYSTEM = {"role": "system", "content": "You answer questions about the manual. " * 20}


def key(body, endpoint=Endpoint.CHAT, meta=NO_META, *, base="m", max_chars=16384, sessions=False):
    return routing_key(
        endpoint, body, meta, base_model=base, max_chars=max_chars, sessions=sessions
    )


def chat(*messages, **fields):
    return {"model": "m", "messages": list(messages), **fields}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_an_earlier_turn_is_a_prefix_of_the_later_conversation() -> None:
    first = key(chat(SYSTEM, user("What is a replica?")))
    later = key(
        chat(
            SYSTEM,
            user("What is a replica?"),
            {"role": "assistant", "content": "A copy of a deployment."},
            user("And a router?"),
        )
    )
    assert later.text.startswith(first.text)
    assert first.scope == later.scope and first.text.startswith(first.scope)


def test_two_questions_on_one_context_share_the_context_and_no_more() -> None:
    a = key(chat(SYSTEM, user("What is a replica?")))
    b = key(chat(SYSTEM, user("How does an ingress work?")))
    shared = 0
    while a.text[shared] == b.text[shared]:
        shared += 1
    # the scope, the system message, the user's role: then the questions differ
    assert shared == len(a.scope) + len("system_") + len(SYSTEM["content"]) + len("_user_")


def test_roles_and_message_boundaries_count() -> None:
    as_system = key(chat({"role": "system", "content": "Be brief."}, user("Hi")))
    as_user = key(chat(user("Be brief."), user("Hi")))
    run_together = key(chat(user("Be brief.Hi")))
    assert len({as_system.text, as_user.text, run_together.text}) == 3


def test_tools_come_first_and_belong_to_the_key() -> None:
    tool = {"type": "function", "function": {"name": "search", "parameters": {}}}
    plain = key(chat(user("Find it")))
    with_tool = key(chat(user("Find it"), tools=[tool]))
    assert plain.text != with_tool.text
    assert "search" in with_tool.text[: with_tool.text.index("Find it")]


def test_tenants_adapters_and_renderings_never_share_a_scope() -> None:
    body = chat(SYSTEM, user("Q"))
    scopes = {
        key(body).scope,
        key(body | {"cache_salt": "tenant-a"}).scope,
        key(body | {"cache_salt": "tenant-b"}).scope,
        key(body | {"model": "m-lora"}).scope,
        key(body | {"chat_template_kwargs": {"enable_thinking": False}}).scope,
        key({"model": "m", "prompt": "Q"}, Endpoint.COMPLETIONS).scope,
    }
    assert len(scopes) == 6


def test_the_salt_itself_never_appears_in_the_key() -> None:
    salted = key(chat(user("Q"), cache_salt="s3cret-tenant-key"))
    assert "s3cret" not in salted.text


def test_the_adapter_is_named_only_for_an_adapter() -> None:
    assert key(chat(user("Q"))).adapter is None
    assert key(chat(user("Q"), model="m-lora")).adapter == "m-lora"
    assert key(chat(user("Q"), model="m-lora"), base=None).adapter is None


def test_responses_instructions_and_input_key_like_the_same_chat() -> None:
    responses = key(
        {"model": "m", "instructions": SYSTEM["content"], "input": "What is a replica?"},
        Endpoint.RESPONSES,
    )
    as_chat = key(chat(SYSTEM, user("What is a replica?")))
    assert responses.text == as_chat.text
    items = key(
        {"model": "m", "input": [{"type": "message", "role": "user", "content": "Hi"}]},
        Endpoint.RESPONSES,
    )
    assert items.text == key(chat(user("Hi"))).text


def test_completions_key_on_the_prompt_text_or_token_ids() -> None:
    text = key({"model": "m", "prompt": "Once upon a time"}, Endpoint.COMPLETIONS)
    batch = key({"model": "m", "prompt": ["Once upon a time", "x"]}, Endpoint.COMPLETIONS)
    ids = key({"model": "m", "prompt": [1, 2, 3]}, Endpoint.COMPLETIONS)
    assert text.text == batch.text and text.text.endswith("Once upon a time")
    assert ids.text.endswith("1,2,3")


def test_a_long_prompt_is_cut_at_the_limit_and_what_follows_makes_no_difference() -> None:
    long = key(chat(user("x" * 100_000)), max_chars=1000)
    assert long.content_chars == 1000
    assert key(chat(user("x" * 100_000), user("later")), max_chars=1000) == long


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (Endpoint.TOKENIZE, chat(user("Q"))),
        (Endpoint.DETOKENIZE, {"model": "m", "tokens": [1]}),
        (Endpoint.CHAT, "not a dict"),
        (Endpoint.CHAT, {"model": "m", "messages": "not a list"}),
        (Endpoint.COMPLETIONS, {"model": "m", "prompt": {"a": 1}}),
        (Endpoint.RESPONSES, {"model": "m", "input": 7}),
    ],
)
def test_no_key_when_there_is_no_prompt_to_share(endpoint, body) -> None:
    assert key(body, endpoint) is None


def test_odd_but_valid_json_shapes_still_key_without_raising() -> None:
    odd = chat(
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]},
        {"content": None},
        7,
        None,
        model=3,
        cache_salt=["x"],
    )
    assert key(odd) is not None


def test_sessions_come_from_the_header_then_the_user_field_only_when_asked() -> None:
    body = chat(user("Q"), user="alice")
    header = RequestMeta.from_headers({"x-session-id": "chat-42"})
    assert key(body).session is None
    assert key(body, sessions=True).session == "u:alice"
    assert key(body, meta=header, sessions=True).session == "h:chat-42"
    assert key(chat(user("Q"), user="x" * 300), sessions=True).session is None


def test_the_session_header_is_kept_apart_from_forwarded_headers() -> None:
    meta = RequestMeta.from_headers({"x-session-id": "s1", "x-request-id": "r1"})
    assert meta.session == "s1" and meta.headers == {"x-request-id": "r1"}
    assert RequestMeta.from_headers({"x-session-id": "y" * 257}) is NO_META
