"""Load corpus documents from Markdown, text, HTML and JSON Lines files.

A corpus is declared as a list of paths, each a file, a directory (searched
recursively) or a glob. Every matched file gets a *source*: its path relative to
the parent of the declared root (``docs/guide.md`` for ``/abs/docs``). Sources
stay the same wherever the tree is checked out, which is what keeps incremental
indexing and chunk ids stable.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmserve.rag.html import html_to_text

#: File suffixes this module knows how to read.
SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".jsonl")

#: Keys of a JSON Lines record that are not user metadata.
JSONL_RESERVED_KEYS = ("text", "title", "id")


class DocumentLoadError(ValueError):
    """A corpus file could not be read or parsed (names the file and line)."""


@dataclass(frozen=True)
class Document:
    """One logical document.

    ``source`` identifies the document in citations and chunk ids. ``file`` is
    the source of the file it came from: the same as ``source`` except for
    JSON Lines, where one file holds many documents (``kb.jsonl:faq-1``).
    """

    source: str
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    file: str = ""

    def __post_init__(self) -> None:
        if not self.file:
            object.__setattr__(self, "file", self.source)


@dataclass(frozen=True)
class SourceFile:
    """A corpus file found on disk, with the stable source name it is indexed under."""

    path: Path
    source: str


def discover_files(paths: Iterable[str | os.PathLike[str]]) -> list[SourceFile]:
    """Expand files, directories and globs into supported corpus files.

    Unsupported suffixes inside directories and globs are skipped; a file named
    explicitly with an unsupported suffix is an error, since it is surely a
    configuration mistake. A path that matches nothing is an error too.
    Results are sorted by source and deduplicated (first declaration wins).
    """
    found: dict[str, SourceFile] = {}
    seen_paths: set[Path] = set()
    for spec in paths:
        for file_path, root in _expand(str(spec)):
            resolved = file_path.resolve()
            if resolved in seen_paths:
                continue
            seen_paths.add(resolved)
            source = file_path.relative_to(root.parent).as_posix()
            found.setdefault(source, SourceFile(path=file_path, source=source))
    return [found[key] for key in sorted(found)]


def _expand(spec: str) -> Iterator[tuple[Path, Path]]:
    """Yield ``(file, root)`` pairs for one path spec; ``root`` anchors the source name."""
    path = Path(spec).expanduser()
    if glob.has_magic(spec):
        root = _glob_root(path)
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES]
        if not files:
            raise DocumentLoadError(f"corpus glob {spec!r} matched no supported files")
        for file_path in files:
            yield file_path, root
    elif path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
        )
        for file_path in files:
            # Hidden folders (.git, .ipynb_checkpoints) are never corpus content.
            if any(part.startswith(".") for part in file_path.relative_to(path).parts):
                continue
            yield file_path, path
    elif path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DocumentLoadError(
                f"{spec}: unsupported file type {path.suffix!r} "
                f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
            )
        yield path, path.parent
    else:
        raise DocumentLoadError(f"corpus path {spec!r} does not exist")


def _glob_root(pattern: Path) -> Path:
    """The longest leading part of a glob pattern without wildcards."""
    parts: list[str] = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def load_documents(paths: Iterable[str | os.PathLike[str]]) -> list[Document]:
    """Load every document under ``paths`` (see :func:`discover_files`)."""
    documents: list[Document] = []
    for source_file in discover_files(paths):
        documents.extend(load_file(source_file.path, source_file.source))
    return documents


def load_file(path: str | os.PathLike[str], source: str | None = None) -> list[Document]:
    """Load the document(s) in one file; ``source`` defaults to the file name."""
    path = Path(path)
    source = source or path.name
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentLoadError(f"{path}: cannot read file: {exc}") from exc
    if suffix in (".md", ".markdown"):
        return [Document(source=source, title=_markdown_title(raw) or path.stem, text=raw)]
    if suffix == ".txt":
        return [Document(source=source, title=path.stem, text=raw)]
    if suffix in (".html", ".htm"):
        try:
            title, text = html_to_text(raw)
        except ValueError as exc:
            raise DocumentLoadError(f"{path}: {exc}") from exc
        return [Document(source=source, title=title or path.stem, text=text)]
    if suffix == ".jsonl":
        return list(_jsonl_documents(raw, path, source))
    raise DocumentLoadError(f"{path}: unsupported file type {suffix!r}")


_MD_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _markdown_title(text: str) -> str | None:
    """The first level-1 ATX heading (``# Title``), ignoring fenced code blocks."""
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if not in_fence and (match := _MD_HEADING.match(line)):
            return match.group(1)
    return None


def _jsonl_documents(raw: str, path: Path, source: str) -> Iterator[Document]:
    """One document per non-blank line: ``text`` required; ``title``/``id`` optional."""
    seen_ids: dict[str, int] = {}
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentLoadError(f"{where}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DocumentLoadError(f"{where}: expected a JSON object, got {type(record).__name__}")
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise DocumentLoadError(f"{where}: missing or empty required string field 'text'")
        title = record.get("title")
        if title is not None and not isinstance(title, str):
            raise DocumentLoadError(f"{where}: field 'title' must be a string")
        doc_id = record.get("id", line_no)
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
            raise DocumentLoadError(f"{where}: field 'id' must be a string or an integer")
        # Ids name the document in chunk ids and citations, so they must be unique.
        if str(doc_id) in seen_ids:
            raise DocumentLoadError(
                f"{where}: duplicate id {doc_id!r} (first used on line {seen_ids[str(doc_id)]})"
            )
        seen_ids[str(doc_id)] = line_no
        metadata = {k: v for k, v in record.items() if k not in JSONL_RESERVED_KEYS}
        yield Document(
            source=f"{source}:{doc_id}",
            title=title or f"{path.stem} {doc_id}",
            text=text,
            metadata=metadata,
            file=source,
        )
