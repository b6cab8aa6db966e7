"""Generate the config reference and JSON schema from the pydantic models.

    python scripts/gen_config_docs.py          # write the files
    python scripts/gen_config_docs.py --check  # exit 1 if any is out of date

Writes docs/config-reference.md and docs/config.schema.json, the only copies of
the reference: README.md links to them instead of holding one.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from llmserve.config import AppConfig  # noqa: E402

REFERENCE = ROOT / "docs" / "config-reference.md"
SCHEMA = ROOT / "docs" / "config.schema.json"

INTRO = """\
One YAML file describes the whole app; the sections below start at its root
(`AppConfig`) and follow nested settings. Unknown keys are errors, and every
problem in a file is reported at once with its path, e.g.
`models[0].engine_kwargs.max_model_len: ...`. Relative paths (`home`, retriever
`uri`, corpus `paths`) are relative to the config file's folder.
See `configs/` for complete examples; editors that support JSON Schema can use
`docs/config.schema.json`."""


def _unannotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def nested_models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model reachable from its fields, breadth first."""
    found: list[type[BaseModel]] = [root]
    for model in found:  # grows while iterating
        pending = [f.annotation for f in model.model_fields.values()]
        while pending:
            tp = _unannotated(pending.pop(0))
            if _is_model(tp):
                if tp not in found:
                    found.append(tp)
            else:
                pending.extend(typing.get_args(tp))
    return found


def type_name(tp: Any) -> str:
    tp = _unannotated(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if _is_model(tp):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def constraints(field: FieldInfo) -> list[str]:
    out = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Gt):
            out.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Ge):
            out.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Lt):
            out.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.Le):
            out.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.MinLen):
            out.append(f"length ≥ {item.min_length}")
        elif isinstance(item, StringConstraints):
            if item.min_length:
                out.append(f"length ≥ {item.min_length}")
            if item.max_length:
                out.append(f"length ≤ {item.max_length}")
            if item.pattern:
                out.append(f"matches `{item.pattern}`")
        elif getattr(item, "pattern", None):
            out.append(f"matches `{item.pattern}`")
    return out


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "*required*"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "*see section*"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def model_section(model: type[BaseModel], level: int) -> str:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"{'#' * level} {model.__name__}", "", doc, ""]
    lines += ["| Field | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, field in model.model_fields.items():
        kind = type_name(field.annotation)
        limits = constraints(field)
        if limits:
            kind += f" ({', '.join(limits)})"
        # Descriptions are plain text: keep "builtin:<name>" from reading as HTML.
        description = (field.description or "").replace("<", "&lt;").replace(">", "&gt;")
        cells = [f"`{name}`", kind, default_text(field), description]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_reference() -> str:
    note = "<!-- Generated by scripts/gen_config_docs.py from llmserve/config; do not edit. -->"
    sections = "\n".join(model_section(m, 2) for m in nested_models(AppConfig))
    return f"# Configuration reference\n\n{note}\n\n{INTRO}\n\n{sections}"


def render_schema() -> str:
    return json.dumps(AppConfig.model_json_schema(), indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every generated file and its expected content."""
    return {REFERENCE: render_reference(), SCHEMA: render_schema()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    stale = [
        path
        for path, text in outputs().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}", file=sys.stderr)
        if stale:
            print("run: python scripts/gen_config_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs().items():
        if path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
