"""Read corpus files: Markdown, text, HTML and JSON Lines into :class:`Document` objects.

Finding the files (folders, globs, links, size checks) is :mod:`llmserve.rag.discovery`.
Reading is bounded (at most ``max_bytes`` per file, never blocking on a FIFO), and
error messages name a file by its *source*, the relative name it is indexed under,
not by its absolute path on the server.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmserve.rag.html import html_to_text

#: File suffixes this module knows how to read.
SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".jsonl")

#: Keys of a JSON Lines record that are not user metadata.
JSONL_RESERVED_KEYS = ("text", "title", "id")

#: Largest corpus file read unless the caller says otherwise. ``corpus.max_file_bytes``
#: has the same default (the config does not import llmserve.rag, which pulls in pyarrow).
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024


class DocumentLoadError(ValueError):
    """A corpus file could not be read or parsed (names the file's source and line)."""


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


def read_file_bytes(
    path: str | os.PathLike[str], name: str, max_bytes: int, *, follow_symlinks: bool = True
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; ``name`` is used in errors.

    With ``follow_symlinks=False`` a link is refused: discovery passes the real
    path it checked, so a link there means the file was swapped after the check.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK  # O_NONBLOCK: opening a FIFO must not wait for a writer
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DocumentLoadError(f"{name}: cannot read file: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise DocumentLoadError(f"{name}: not a regular file")
        if info.st_size > max_bytes:
            raise DocumentLoadError(f"{name}: {oversize_message(info.st_size, max_bytes)}")
        try:
            data = handle.read(max_bytes + 1)  # + 1: a file that grew since fstat shows it
        except OSError as exc:
            raise DocumentLoadError(f"{name}: cannot read file: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise DocumentLoadError(f"{name}: {oversize_message(len(data), max_bytes)}")
    return data


def oversize_message(size: int, max_bytes: int) -> str:
    """Why a file of ``size`` bytes is not read (shared with discovery's stat check)."""
    return f"{size} bytes, more than max_file_bytes ({max_bytes})"


def load_file(
    path: str | os.PathLike[str],
    source: str | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> list[Document]:
    """Load the document(s) in one file; ``source`` defaults to the file name."""
    path = Path(path)
    source = source or path.name
    return parse_documents(read_file_bytes(path, source, max_bytes), path, source)


def parse_documents(data: bytes, path: Path, source: str) -> list[Document]:
    """The document(s) in a file's bytes; ``path`` gives the type (suffix) and default title."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentLoadError(f"{source}: unsupported file type {suffix!r}")
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentLoadError(
            f"{source}: not UTF-8 text (byte {exc.start}: {exc.reason})"
        ) from exc
    # Universal newlines, as text-mode reading did before files were read as bytes.
    raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if suffix in (".md", ".markdown"):
        return [Document(source=source, title=_markdown_title(raw) or path.stem, text=raw)]
    if suffix == ".txt":
        return [Document(source=source, title=path.stem, text=raw)]
    if suffix in (".html", ".htm"):
        try:
            title, text = html_to_text(raw)
        except ValueError as exc:
            raise DocumentLoadError(f"{source}: {exc}") from exc
        return [Document(source=source, title=title or path.stem, text=text)]
    return list(_jsonl_documents(raw, path, source))


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
        where = f"{source}:{line_no}"
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
