"""Loading corpus files: formats, source names, JSON Lines metadata and errors."""

from __future__ import annotations

import json

import pytest

from llmserve.rag.documents import (
    DocumentLoadError,
    discover_files,
    load_documents,
    load_file,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "kb"
    (root / "guides").mkdir(parents=True)
    (root / "guides" / "setup.md").write_text("Intro line\n\n# Setting up\n\nInstall it.\n")
    (root / "notes.txt").write_text("Plain notes.\n")
    (root / "page.html").write_text(
        "<html><head><title>The Page</title><style>p {color: red}</style></head>"
        "<body><h1>Heading</h1><p>First &amp; foremost.</p><script>var x = 1;</script>"
        "<p>Second   paragraph.</p></body></html>"
    )
    (root / "faq.jsonl").write_text(
        json.dumps({"id": "a", "title": "Ports", "text": "Port 8000.", "team": "web", "year": 2024})
        + "\n\n"
        + json.dumps({"text": "No id or title here."})
        + "\n"
    )
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.md").write_text("# Secret\n")
    return root


def test_directory_sources_are_relative_to_the_roots_parent(corpus):
    files = discover_files([str(corpus)])

    assert [f.source for f in files] == [
        "kb/faq.jsonl",
        "kb/guides/setup.md",
        "kb/notes.txt",
        "kb/page.html",
    ]


def test_glob_and_single_file_specs(corpus):
    by_glob = discover_files([str(corpus / "**" / "*.md")])
    single = discover_files([str(corpus / "notes.txt")])

    assert [f.source for f in by_glob] == ["kb/guides/setup.md"]
    assert [f.source for f in single] == ["kb/notes.txt"]


def test_same_file_from_two_specs_is_loaded_once(corpus):
    files = discover_files([str(corpus), str(corpus / "notes.txt")])

    assert [f.source for f in files].count("kb/notes.txt") == 1


def test_markdown_title_is_first_h1_else_stem(tmp_path):
    with_heading = tmp_path / "a.md"
    with_heading.write_text("```\n# not a title\n```\nText\n# Real Title #\n## Sub\n")
    without = tmp_path / "b-file.md"
    without.write_text("## Only a subheading\n")

    assert load_file(with_heading)[0].title == "Real Title"
    assert load_file(without)[0].title == "b-file"


def test_text_is_kept_verbatim_for_markdown_and_txt(corpus):
    docs = {d.source: d for d in load_documents([str(corpus)])}

    assert docs["kb/guides/setup.md"].text == "Intro line\n\n# Setting up\n\nInstall it.\n"
    assert docs["kb/notes.txt"].title == "notes"
    assert docs["kb/notes.txt"].metadata == {}
    assert docs["kb/notes.txt"].file == "kb/notes.txt"


def test_html_tags_scripts_and_styles_are_stripped(corpus):
    (doc,) = load_file(corpus / "page.html", "kb/page.html")

    assert doc.title == "The Page"
    assert doc.text == "Heading\n\nFirst & foremost.\n\nSecond paragraph."


def test_jsonl_documents_with_metadata(corpus):
    docs = load_file(corpus / "faq.jsonl", "kb/faq.jsonl")

    assert [d.source for d in docs] == ["kb/faq.jsonl:a", "kb/faq.jsonl:3"]
    assert docs[0].title == "Ports"
    assert docs[0].text == "Port 8000."
    assert docs[0].metadata == {"team": "web", "year": 2024}
    assert docs[1].title == "faq 3"  # line number as id, file stem in the title
    assert all(d.file == "kb/faq.jsonl" for d in docs)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"title": "no text"}', "'text'"),
        ('{"text": "   "}', "'text'"),
        ('{"text": "x", "title": 5}', "'title'"),
        ('{"text": "x", "id": [1]}', "'id'"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")

    with pytest.raises(DocumentLoadError) as excinfo:
        load_file(path)

    assert f"{path}:2" in str(excinfo.value)
    assert message in str(excinfo.value)


def test_duplicate_jsonl_ids_are_rejected(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')

    with pytest.raises(DocumentLoadError, match=r"dup.jsonl:2: duplicate id 'x'.*line 1"):
        load_file(path)


def test_missing_path_and_unsupported_file_are_errors(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")

    with pytest.raises(DocumentLoadError, match="does not exist"):
        discover_files([str(tmp_path / "nope")])
    with pytest.raises(DocumentLoadError, match="unsupported file type"):
        discover_files([str(tmp_path / "data.csv")])
    with pytest.raises(DocumentLoadError, match="matched no supported files"):
        discover_files([str(tmp_path / "*.md")])
