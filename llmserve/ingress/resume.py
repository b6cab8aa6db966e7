"""Streams that outlive their replica: continue on another one, invisibly to the client.

For a model with several replicas behind a handle, the ingress asks vLLM for
the token ids of a resumable stream (``return_token_ids``) and keeps the
prompt's and every relayed chunk's ids. If the replica dies mid-stream, it
sends ``prompt ids + ids already streamed`` as a token-id prompt to
``completions`` on a healthy replica, with ``max_tokens`` reduced by what was
sent, and relays only the new text, reshaped as chunks of the original stream
(same ``id``). Token ids, not text, make the continuation exact: at
temperature 0 the client gets the text an uninterrupted run gives.

The continuation is the same request: it carries every field of the
original body (sampling, ``bad_words``, ``allowed_token_ids``, ``vllm_xargs``
for custom logits processors, ``cache_salt``, ``priority``, ... and any field
a later vLLM adds) except the ones in ``NOT_CARRIED``, which must not carry.
The ingress does not import vLLM (5 s and half a GB per replica), so this is
an exclude list rather than vLLM's ``CompletionRequest`` fields read at run
time; tests/unit/ingress/test_resume.py checks it against those fields, so a
field a new vLLM adds fails there until someone decides where it belongs.
Keys vLLM does not know are carried too; its request models accept and
ignore them, as for the original request.

Only plain text streams are resumable (one choice, no tools, logprobs or
structured output); a stream that cannot be resumed ends with the SSE error
event as before. The token ids are stripped from what the client sees unless
it asked for them. Only resumable streams are parsed; everything else is
relayed as bytes.
"""

from __future__ import annotations

from typing import Any

from llmserve.openai import sse

# Fields of the original request that must not reach the continuation.
NOT_CARRIED = frozenset(
    {
        # The continuation's prompt is token ids: the original prompt, rendered
        # (chat template, tools, documents), tokenized and truncated once already.
        "prompt",
        "prompt_embeds",
        "suffix",
        "messages",
        "add_generation_prompt",
        "continue_final_message",
        "chat_template",
        "chat_template_kwargs",
        "documents",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "mm_processor_kwargs",
        "media_io_kwargs",
        "add_special_tokens",
        "truncate_prompt_tokens",  # again would cut off the tokens already sent
        "truncation_side",
        # Set by continuation() itself: the model, streaming, the token ids, and
        # the token limits less what was already sent.
        "model",
        "stream",
        "stream_options",
        "return_token_ids",
        "max_tokens",
        "max_completion_tokens",
        "min_tokens",
        # What the answer holds: the relay rewrites the continuation's chunks
        # as the original's, which these would reshape (resumable() also
        # refuses n > 1 and logprobs).
        "n",
        "echo",
        "logprobs",
        "top_logprobs",
        "prompt_logprobs",
        "logprob_token_ids",
        "return_tokens_as_token_ids",
        "include_reasoning",
        "return_prompt_text",
        "return_token_offsets",  # render endpoints only
        "mm_payload",  # render endpoints only
        "return_mm_kwargs",  # render endpoints only
        "routed_experts_prompt_start",
        # The original engine request's own: its id, and the KV / encoder cache
        # handoff of disaggregated serving, which describes the original prompt.
        "request_id",
        "kv_transfer_params",
        "ec_transfer_params",
        # State that starts over in a new request (grammar, beams): a stream
        # that sets them is not resumable.
        "response_format",
        "structured_outputs",
        "use_beam_search",
    }
)
# Anything here makes a stream not resumable.
_NOT_RESUMABLE = (
    "tools",
    "functions",
    "logprobs",
    "top_logprobs",
    "echo",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "best_of",
    "prompt_logprobs",
    "use_beam_search",
)
MAX_RESUMES = 2


def resumable(method: str, body: dict[str, Any]) -> bool:
    if method not in ("chat", "completions") or body.get("stream") is not True:
        return False
    if body.get("n") not in (None, 1) or any(body.get(k) for k in _NOT_RESUMABLE):
        return False
    if method == "completions":  # one prompt, as text or token ids
        prompt = body.get("prompt")
        return isinstance(prompt, str) or (
            isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
        )
    return True


class StreamState:
    """What the client has been sent so far, in token ids."""

    def __init__(self, method: str, body: dict[str, Any]):
        self.method = method
        self.body = body
        self.client_wants_ids = bool(body.get("return_token_ids"))
        self.prompt_ids: list[int] | None = None
        self.token_ids: list[int] = []
        self.id: str | None = None
        self.created: int | None = None
        self.finished = False
        self.resumes = 0

    def request_body(self) -> dict[str, Any]:
        """The original request, asking vLLM for token ids."""
        return {**self.body, "return_token_ids": True}

    def relay(self, event: str) -> bytes:
        """Record one SSE event from the engine; the bytes to send to the client."""
        chunk = _chunk(event)
        if chunk is None:
            return event.encode()
        self.id = chunk.get("id", self.id)
        self.created = chunk.get("created", self.created)
        if chunk.get("prompt_token_ids") is not None:
            self.prompt_ids = chunk["prompt_token_ids"]
        for choice in chunk.get("choices") or []:
            if choice.get("prompt_token_ids") is not None:  # completions puts them here
                self.prompt_ids = choice["prompt_token_ids"]
            self.token_ids.extend(choice.get("token_ids") or [])
            if choice.get("finish_reason"):
                self.finished = True
        return self._for_client(chunk)

    def can_resume(self) -> bool:
        return self.prompt_ids is not None and not self.finished and self.resumes < MAX_RESUMES

    def continuation(self) -> dict[str, Any]:
        """A ``completions`` request that continues the stream where the client is."""
        assert self.prompt_ids is not None, "can_resume() is checked first"
        body = {k: v for k, v in self.body.items() if k not in NOT_CARRIED}
        body |= {
            "model": self.body["model"],
            "prompt": self.prompt_ids + self.token_ids,
            "stream": True,
            "return_token_ids": True,
        }
        limit = self.body.get("max_completion_tokens") or self.body.get("max_tokens")
        if limit is not None:
            body["max_tokens"] = max(limit - len(self.token_ids), 1)
        if self.body.get("min_tokens"):
            body["min_tokens"] = max(self.body["min_tokens"] - len(self.token_ids), 0)
        if (self.body.get("stream_options") or {}).get("include_usage"):
            body["stream_options"] = {"include_usage": True}
        self.resumes += 1
        return body

    def relay_continued(self, event: str) -> bytes:
        """One event of the continuation, as a chunk of the original stream."""
        chunk = _chunk(event)
        if chunk is None:  # [DONE], or an error event
            return event.encode()
        ids: list[int] = []
        for choice in chunk.get("choices") or []:
            ids.extend(choice.get("token_ids") or [])
            if choice.get("finish_reason"):
                self.finished = True
        self.token_ids.extend(ids)
        usage = chunk.get("usage")
        if usage:  # counted against the original prompt, not the continuation's
            completion = len(self.token_ids)
            usage = {
                "prompt_tokens": len(self.prompt_ids or []),
                "completion_tokens": completion,
                "total_tokens": len(self.prompt_ids or []) + completion,
            }
        chunk = {**chunk, "id": self.id, "created": self.created, "usage": usage}
        if self.method == "chat":
            chunk["object"] = "chat.completion.chunk"
            chunk["choices"] = [
                {
                    "index": 0,
                    "delta": {"content": c.get("text", "")},
                    "logprobs": None,
                    "finish_reason": c.get("finish_reason"),
                    "stop_reason": c.get("stop_reason"),
                    "token_ids": c.get("token_ids"),
                }
                for c in chunk.get("choices") or []
            ]
        return self._for_client(chunk)

    def _for_client(self, chunk: dict[str, Any]) -> bytes:
        if not self.client_wants_ids:
            if "prompt_token_ids" in chunk:
                chunk["prompt_token_ids"] = None
            for choice in chunk.get("choices") or []:
                for key in ("token_ids", "prompt_token_ids"):
                    if key in choice:
                        choice[key] = None
        return sse.data(chunk)


def _chunk(event: str) -> dict[str, Any] | None:
    """The JSON of a ``data:`` event; None for ``[DONE]``, errors and anything else."""
    chunk = sse.parse_data(event)
    return None if chunk is None or "error" in chunk else chunk
