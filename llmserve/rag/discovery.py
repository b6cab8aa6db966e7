"""Find a corpus's files on disk, keeping everything inside the declared roots.

A corpus is declared as a list of paths, each a file, a folder (searched
recursively) or a glob. Every matched file gets a *source*: its path relative to
the parent of the declared root (``docs/guide.md`` for ``/abs/docs``). Sources
stay the same wherever the tree is checked out, which is what keeps incremental
indexing and chunk ids stable.

Indexed text is served to any API client by /v1/retrieve, so a file is indexed
only if its real path (all links resolved) lies inside the real path of its
*root*: the folder for a folder, the leading folders without wildcards for a
glob, and the file's own folder for a file named explicitly (so a named file may
be a link to a file under that same folder, not elsewhere). Links that stay
inside the root are fine; links to folders are never walked (a target inside
the root is walked anyway). Files are reported as *skipped* rather than indexed
when they are links leaving the root, broken links, not regular files (FIFOs,
devices), or bigger than ``max_file_bytes`` (checked from ``stat`` before any
reading).

Errors (:class:`DocumentLoadError`) are kept for configuration mistakes that no
file's content can cause: a declared path that does not exist, a glob matching
no supported file, a file named explicitly whose type is not supported.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmserve.rag.documents import (
    DEFAULT_MAX_FILE_BYTES,
    SUPPORTED_SUFFIXES,
    Document,
    DocumentLoadError,
    oversize_message,
    parse_documents,
    read_file_bytes,
)


@dataclass(frozen=True)
class SourceFile:
    """A corpus file found on disk, with the stable source name it is indexed under.

    ``path`` is the path as found (it names the document); ``real_path`` is the
    resolved path that was checked to lie inside the root, and is what gets read.
    """

    path: Path
    source: str
    real_path: Path


@dataclass(frozen=True)
class SkippedFile:
    """A corpus file left out of the index; ``message`` names its source and says why."""

    source: str
    message: str


@dataclass
class CorpusFiles:
    """The result of :func:`discover_files`: files to index and files skipped, by source."""

    files: list[SourceFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


def discover_files(
    paths: Iterable[str | os.PathLike[str]], *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> CorpusFiles:
    """Expand files, folders and globs into the corpus files to index.

    Unsupported suffixes and hidden names (``.git``) inside folders and globs are
    ignored; see the module docstring for what is skipped and what is an error.
    Results are sorted by source and deduplicated (first declaration wins).
    """
    found: dict[str, SourceFile] = {}
    skipped: dict[str, SkippedFile] = {}
    seen_paths: set[Path] = set()
    for spec in paths:
        for item in _expand(str(spec), max_file_bytes):
            if isinstance(item, SkippedFile):
                skipped.setdefault(item.source, item)
            elif item.real_path not in seen_paths:
                seen_paths.add(item.real_path)
                found.setdefault(item.source, item)
    return CorpusFiles(
        files=[found[key] for key in sorted(found)],
        skipped=[skipped[key] for key in sorted(skipped) if key not in found],
    )


def read_source_file(source_file: SourceFile, max_bytes: int) -> bytes:
    """A discovered file's bytes, read from its checked real path (never through a link)."""
    return read_file_bytes(
        source_file.real_path, source_file.source, max_bytes, follow_symlinks=False
    )


def load_source_file(source_file: SourceFile, max_bytes: int) -> list[Document]:
    """The documents of a discovered file."""
    data = read_source_file(source_file, max_bytes)
    return parse_documents(data, source_file.path, source_file.source)


def load_documents(
    paths: Iterable[str | os.PathLike[str]], *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> list[Document]:
    """Every document under ``paths``, strictly: a file the indexer would skip is an error."""
    corpus = discover_files(paths, max_file_bytes=max_file_bytes)
    if corpus.skipped:
        raise DocumentLoadError(corpus.skipped[0].message)
    documents: list[Document] = []
    for source_file in corpus.files:
        documents.extend(load_source_file(source_file, max_file_bytes))
    return documents


def _expand(spec: str, max_bytes: int) -> Iterator[SourceFile | SkippedFile]:
    """The files (or skipped files) of one declared path."""
    path = Path(spec).expanduser()
    if glob.has_magic(spec):
        root = _glob_root(path)
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        candidates = [
            p for p in matches if p.suffix.lower() in SUPPORTED_SUFFIXES and not p.is_dir()
        ]
        if not candidates:
            raise DocumentLoadError(f"corpus glob {spec!r} matched no supported files")
        for file_path in candidates:
            yield _check(file_path, root, max_bytes)
    elif path.is_dir():
        # Sorted, so that of two names for one file (a link and its target) the
        # first in name order is kept, whichever folder os.walk visits first.
        yield from sorted(_walk(path, max_bytes), key=lambda item: item.source)
    elif path.exists():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DocumentLoadError(
                f"{spec}: unsupported file type {path.suffix!r} "
                f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
            )
        yield _check(path, path.parent, max_bytes)
    else:
        raise DocumentLoadError(f"corpus path {spec!r} does not exist")


def _walk(root: Path, max_bytes: int) -> Iterator[SourceFile | SkippedFile]:
    """The supported files under a folder, without following links to folders."""
    real_root = Path(os.path.realpath(root))
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(folder)
        # Hidden folders (.git, .ipynb_checkpoints) are never corpus content.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            link = here / name
            if link.is_symlink() and not _inside(Path(os.path.realpath(link)), real_root):
                yield _skipped(link, root, "link to a folder outside the corpus root, not followed")
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                yield _check(here / name, root, max_bytes)


def _check(path: Path, root: Path, max_bytes: int) -> SourceFile | SkippedFile:
    """``path`` as a corpus file of ``root``, or why it is skipped."""
    real_path = Path(os.path.realpath(path))
    if not _inside(real_path, Path(os.path.realpath(root))):
        return _skipped(path, root, "link to a file outside the corpus root")
    try:
        info = os.stat(real_path)
    except OSError as exc:  # a broken link, a link loop, no permission
        return _skipped(path, root, f"cannot read file: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return _skipped(path, root, "not a regular file")
    if info.st_size > max_bytes:
        return _skipped(path, root, oversize_message(info.st_size, max_bytes))
    return SourceFile(path=path, source=_source(path, root), real_path=real_path)


def _skipped(path: Path, root: Path, reason: str) -> SkippedFile:
    source = _source(path, root)
    return SkippedFile(source=source, message=f"{source}: {reason}")


def _source(path: Path, root: Path) -> str:
    return path.relative_to(root.parent).as_posix()


def _inside(real_path: Path, real_root: Path) -> bool:
    return real_path == real_root or real_root in real_path.parents


def _glob_root(pattern: Path) -> Path:
    """The longest leading part of a glob pattern without wildcards."""
    parts: list[str] = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")
