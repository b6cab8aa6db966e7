"""Reading corpus files: formats, JSON Lines metadata, read limits and errors."""

from __future__ import annotations

import json
import os
import threading

import pytest

from llmserve.rag.discovery import load_documents
from llmserve.rag.documents import DocumentLoadError, load_file

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

    assert str(excinfo.value).startswith("bad.jsonl:2: ")  # the source, not the server path
    assert message in str(excinfo.value)


def test_duplicate_jsonl_ids_are_rejected(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')

    with pytest.raises(DocumentLoadError, match=r"dup.jsonl:2: duplicate id 'x'.*line 1"):
        load_file(path)


def test_files_that_are_not_utf8_are_errors_naming_the_source(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))

    with pytest.raises(DocumentLoadError, match=r"^docs/latin1.txt: not UTF-8 text") as excinfo:
        load_file(path, "docs/latin1.txt")

    assert str(tmp_path) not in str(excinfo.value)


def test_reading_stops_at_max_bytes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x" * 101)

    with pytest.raises(DocumentLoadError, match=r"101 bytes, more than max_file_bytes \(100\)"):
        load_file(path, max_bytes=100)
    path.write_text("x" * 100)
    assert load_file(path, max_bytes=100)[0].text == "x" * 100


def test_windows_line_endings_read_as_newlines(tmp_path):
    path = tmp_path / "crlf.md"
    path.write_bytes(b"# Title\r\n\r\nBody\rMore\r\n")

    (doc,) = load_file(path)

    assert doc.text == "# Title\n\nBody\nMore\n"
    assert doc.title == "Title"


def test_unsupported_type_and_missing_file_are_errors_without_server_paths(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")

    with pytest.raises(DocumentLoadError, match=r"^data.csv: unsupported file type '.csv'"):
        load_file(tmp_path / "data.csv")
    with pytest.raises(DocumentLoadError, match=r"^gone.md: cannot read file: No such file"):
        load_file(tmp_path / "gone.md")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    errors: list[DocumentLoadError] = []

    def load() -> None:
        try:
            load_file(tmp_path / "pipe.txt")
        except DocumentLoadError as exc:
            errors.append(exc)

    # A daemon thread, so that a blocking open fails this test instead of stalling the run.
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=60)

    assert not worker.is_alive(), "opening a FIFO blocked"
    assert [str(e) for e in errors] == ["pipe.txt: not a regular file"]
