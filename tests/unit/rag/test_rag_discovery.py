"""Finding corpus files: source names, links kept inside the roots, size cap, errors."""

from __future__ import annotations

import os

import pytest

from llmserve.rag.discovery import discover_files, load_documents, read_source_file
from llmserve.rag.documents import DocumentLoadError

pytestmark = pytest.mark.unit


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "kb"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "setup.md").write_text("# Setting up\n")
    (root / "guides" / "README").write_text("no suffix: not found on its own\n")
    (root / "notes.txt").write_text("Plain notes.\n")
    (root / "page.html").write_text("<p>Page</p>")
    (root / "faq.jsonl").write_text('{"text": "Port 8000."}\n')
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.md").write_text("# Secret\n")
    (root / ".draft.md").write_text("# Draft\n")
    return root


@pytest.fixture
def outside(tmp_path):
    """Files next to the corpus that must never reach the index."""
    folder = tmp_path / "home"
    (folder / ".aws").mkdir(parents=True)
    (folder / ".aws" / "credentials").write_text("aws_secret_access_key = hunter2\n")
    (folder / "private").mkdir()
    (folder / "private" / "keys.md").write_text("# Keys\n")
    return folder


def sources(found):
    return [f.source for f in found.files]


def skipped(found):
    return {s.source: s.message for s in found.skipped}


def test_directory_sources_are_relative_to_the_roots_parent(corpus):
    found = discover_files([str(corpus)])

    assert sources(found) == ["kb/faq.jsonl", "kb/guides/setup.md", "kb/notes.txt", "kb/page.html"]
    assert found.skipped == []


def test_glob_and_single_file_specs(corpus):
    by_glob = discover_files([str(corpus / "**" / "*.md")])
    single = discover_files([str(corpus / "notes.txt")])

    assert sources(by_glob) == ["kb/guides/setup.md"]
    assert sources(single) == ["kb/notes.txt"]


def test_same_file_from_two_specs_is_loaded_once(corpus):
    found = discover_files([str(corpus), str(corpus / "notes.txt")])

    assert sources(found).count("kb/notes.txt") == 1


def test_configuration_mistakes_are_errors(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")

    with pytest.raises(DocumentLoadError, match="does not exist"):
        discover_files([str(tmp_path / "nope")])
    with pytest.raises(DocumentLoadError, match="unsupported file type"):
        discover_files([str(tmp_path / "data.csv")])
    with pytest.raises(DocumentLoadError, match="matched no supported files"):
        discover_files([str(tmp_path / "*.md")])


def test_link_to_a_file_outside_the_root_is_skipped(corpus, outside, tmp_path):
    (corpus / "creds.md").symlink_to(outside / ".aws" / "credentials")
    (corpus / "guides" / "keys.txt").symlink_to(outside / "private" / "keys.md")

    for spec in (corpus, corpus / "**" / "*.*"):
        found = discover_files([str(spec)])

        assert "kb/creds.md" not in sources(found)
        assert skipped(found) == {
            "kb/creds.md": "kb/creds.md: link to a file outside the corpus root",
            "kb/guides/keys.txt": "kb/guides/keys.txt: link to a file outside the corpus root",
        }
        assert all(str(tmp_path) not in s.message for s in found.skipped)


def test_link_to_a_folder_outside_the_root_is_not_walked(corpus, outside):
    (corpus / "ext").symlink_to(outside / "private", target_is_directory=True)

    walked = discover_files([str(corpus)])
    globbed = discover_files([str(corpus / "**" / "*.md")])  # ** itself follows folder links

    assert not any(s.startswith("kb/ext") for s in sources(walked) + sources(globbed))
    assert skipped(walked) == {
        "kb/ext": "kb/ext: link to a folder outside the corpus root, not followed"
    }
    assert skipped(globbed) == {
        "kb/ext/keys.md": "kb/ext/keys.md: link to a file outside the corpus root"
    }


def test_explicitly_named_link_must_stay_in_its_folder(corpus, outside):
    (corpus / "named.md").symlink_to(corpus / "guides" / "setup.md")
    (corpus / "leak.md").symlink_to(outside / "private" / "keys.md")

    found = discover_files([str(corpus / "named.md"), str(corpus / "leak.md")])

    assert sources(found) == ["kb/named.md"]
    assert skipped(found) == {"kb/leak.md": "kb/leak.md: link to a file outside the corpus root"}


def test_links_inside_the_root_are_indexed(corpus):
    (corpus / "readme.md").symlink_to("guides/README")  # relative, not indexed by itself
    (corpus / "alias").symlink_to("guides", target_is_directory=True)
    (corpus / "setup-link.md").symlink_to(corpus / "guides" / "setup.md")

    found = discover_files([str(corpus)])

    assert sources(found) == [
        "kb/faq.jsonl",
        "kb/guides/setup.md",  # once: the link to it is the same file
        "kb/notes.txt",
        "kb/page.html",
        "kb/readme.md",
    ]
    assert found.skipped == []
    (readme,) = load_documents([str(corpus / "readme.md")])
    assert readme.text == "no suffix: not found on its own\n"


def test_if_the_root_is_a_link_its_target_is_the_root(corpus, tmp_path):
    (tmp_path / "docs").symlink_to(corpus, target_is_directory=True)

    found = discover_files([str(tmp_path / "docs")])

    assert "docs/guides/setup.md" in sources(found)
    assert found.skipped == []


def test_oversized_file_is_skipped_before_reading(corpus):
    (corpus / "big.md").write_text("x" * 101)
    (corpus / "exact.md").write_text("x" * 100)

    found = discover_files([str(corpus)], max_file_bytes=100)

    assert "kb/exact.md" in sources(found)
    assert skipped(found) == {"kb/big.md": "kb/big.md: 101 bytes, more than max_file_bytes (100)"}


def test_broken_links_and_fifos_are_skipped(corpus):
    (corpus / "broken.md").symlink_to(corpus / "gone.md")
    os.mkfifo(corpus / "pipe.txt")

    found = discover_files([str(corpus)])

    assert skipped(found) == {
        "kb/broken.md": "kb/broken.md: cannot read file: No such file or directory",
        "kb/pipe.txt": "kb/pipe.txt: not a regular file",
    }


def test_a_file_swapped_for_a_link_after_discovery_is_not_read(corpus, outside):
    (source_file,) = discover_files([str(corpus / "notes.txt")]).files
    (corpus / "notes.txt").unlink()
    (corpus / "notes.txt").symlink_to(outside / ".aws" / "credentials")

    with pytest.raises(DocumentLoadError, match="kb/notes.txt: cannot read file"):
        read_source_file(source_file, 1000)


def test_load_documents_refuses_what_the_indexer_would_skip(corpus):
    (corpus / "big.md").write_text("x" * 101)

    with pytest.raises(DocumentLoadError, match="kb/big.md: 101 bytes"):
        load_documents([str(corpus)], max_file_bytes=100)
