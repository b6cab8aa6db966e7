"""Checks a model's ``serving`` block against vLLM's own ``FrontendArgs``.

The block holds what ``vllm serve`` takes as frontend flags for one model
(chat template, tool and reasoning parsers, response role, ...). Flags that
configure vLLM's HTTP server belong to llmserve's ingress, and flags for
endpoints llmserve does not serve are refused with the reason.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import Any

from llmserve.compat import vllm as vllm_compat
from llmserve.config.engine_args import NO_VLLM, check_args, dataclass_hints
from llmserve.config.errors import Loc

# Frontend flags whose job an llmserve config field does. Value: that field.
OWNED_SERVING_OPTIONS: dict[str, str] = {
    "host": "ingress.host",
    "port": "ingress.port",
    "api_key": "ingress.api_keys",
    "root_path": "ingress.route_prefix",
    "h11_max_incomplete_event_size": "ingress.max_request_body_bytes",
}

_SERVER = "llmserve's ingress is the HTTP server, not vLLM"
_TLS = "llmserve's ingress serves plain HTTP; terminate TLS in a proxy in front of it"
_NOT_SERVED = "llmserve does not serve the endpoints it configures"

# Frontend flags with no per-model meaning in llmserve. Value: why.
UNSUPPORTED_SERVING_OPTIONS: dict[str, str] = {
    "ssl_keyfile": _TLS,
    "ssl_certfile": _TLS,
    "ssl_ca_certs": _TLS,
    "ssl_cert_reqs": _TLS,
    "ssl_ciphers": _TLS,
    "enable_ssl_refresh": _TLS,
    "lora_modules": "set LoRA adapters in the model's lora block, which the ingress routes",
    "tool_server": "llmserve serves the Responses API without vLLM's tool servers",
    "tokens_only": _NOT_SERVED,
    "enable_scale_out": _NOT_SERVED,
    "enable_tokenizer_info_endpoint": _NOT_SERVED,
    "enable_server_load_tracking": _NOT_SERVED,
    "cohere_is_reasoning_model": _NOT_SERVED,
    "anthropic_disabled_thinking_effort": _NOT_SERVED,
}

# ``vllm serve`` flags that vLLM keeps in AsyncEngineArgs but that configure
# the serving layer; llmserve hands them to the engine args.
ENGINE_SERVING_OPTIONS = ("reasoning_parser", "reasoning_parser_plugin")


@functools.cache
def serving_option_hints() -> dict[str, Any] | None:
    """Option name -> type hint; None when vLLM is not installed."""
    try:
        from vllm.engine.arg_utils import AsyncEngineArgs

        frontend = vllm_compat.frontend_args_class()
    except ImportError:
        return None
    engine = dataclass_hints(AsyncEngineArgs)
    return dataclass_hints(frontend) | {name: engine[name] for name in ENGINE_SERVING_OPTIONS}


def _refusals(hints: dict[str, Any]) -> dict[str, str]:
    refused = {
        name: f"'{name}' is set by llmserve; use '{field}' instead"
        for name, field in OWNED_SERVING_OPTIONS.items()
    }
    for name, why in UNSUPPORTED_SERVING_OPTIONS.items():
        refused[name] = f"'{name}' cannot be set per model: {why}"
    per_model = vllm_compat.per_model_frontend_options() | set(ENGINE_SERVING_OPTIONS)
    for name in hints:
        if name not in per_model and name not in refused:
            refused[name] = f"'{name}' configures vLLM's HTTP server: {_SERVER}"
    return refused


def check_serving_options(
    options: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[Loc, str]]]:
    """Validate a serving block; returns the (lightly coerced) options and the issues found."""
    hints = serving_option_hints()
    if hints is None:
        no_vllm = NO_VLLM.replace("engine arguments", "serving options")
        return options, [((), no_vllm)] if options else []
    refused = _refusals(hints)
    checked, issues = check_args(options, serving_option_hints, refused, "vLLM serving option")
    bad = {loc[0] for loc, _ in issues}
    for name, check in _VALUE_CHECKS.items():
        if name in checked and name not in bad:
            problem = check(checked[name], checked)
            if problem:
                issues.append(((name,), problem))
    if checked.get("enable_auto_tool_choice") and not checked.get("tool_call_parser"):
        issues.append(
            (("enable_auto_tool_choice",), "enable_auto_tool_choice needs a tool_call_parser")
        )
    return checked, issues


def _parser_name(kind: str, registered: list[str], plugin_key: str):
    def check(value: Any, options: dict[str, Any]) -> str | None:
        if value is None or value in registered or options.get(plugin_key):
            return None  # a plugin registers its names only when the server starts
        close = difflib.get_close_matches(str(value), registered, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {kind} '{value}'{hint}; vLLM has: {', '.join(registered)}"

    return check


def _check_tool_call_parser(value: Any, options: dict[str, Any]) -> str | None:
    from vllm.tool_parsers import ToolParserManager

    registered = ToolParserManager.list_registered()
    return _parser_name("tool_call_parser", registered, "tool_parser_plugin")(value, options)


def _check_reasoning_parser(value: Any, options: dict[str, Any]) -> str | None:
    if not value:  # vLLM's default is the empty string: no parser
        return None
    from vllm.reasoning import ReasoningParserManager

    registered = ReasoningParserManager.list_registered()
    return _parser_name("reasoning_parser", registered, "reasoning_parser_plugin")(value, options)


def _check_chat_template(value: Any, options: dict[str, Any]) -> str | None:
    try:
        vllm_compat.check_chat_template(value)
    except Exception:
        shown = value if len(value) <= 80 else value[:77] + "..."
        return (
            f"chat_template {shown!r} is neither a template (it has no '{{', '}}' or newline), "
            "an existing file, nor one of vLLM's built-in templates"
        )
    return None


def _check_non_negative(value: Any, options: dict[str, Any]) -> str | None:
    return "must be 0 (off) or a positive number of seconds" if value < 0 else None


_VALUE_CHECKS = {
    "tool_call_parser": _check_tool_call_parser,
    "reasoning_parser": _check_reasoning_parser,
    "chat_template": _check_chat_template,
    "sse_keep_alive_interval": _check_non_negative,
}


def resolve_chat_template(value: Any, base_dir: Path) -> Any:
    """A relative chat_template path made absolute, when that file exists.

    Literal templates and the names of vLLM's built-in templates stay as written.
    """
    if not isinstance(value, str) or any(c in value for c in "{}\n"):
        return value
    candidate = base_dir / Path(value).expanduser()
    return str(candidate.resolve()) if candidate.is_file() else value
