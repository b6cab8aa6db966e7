"""HTML to text with lxml: the text contract, and linear time on crafted input."""

from __future__ import annotations

import threading

import pytest

from llmserve.rag.html import html_to_text

pytestmark = pytest.mark.unit


def test_title_falls_back_to_first_h1():
    title, text = html_to_text("<h1>Main <em>topic</em></h1><h1>Other</h1><p>Body</p>")

    assert title == "Main topic"
    assert text == "Main topic\n\nOther\n\nBody"


def test_blocks_become_line_breaks_and_paragraphs_blank_lines():
    html = (
        "<title> A  page </title><!-- a comment --><ul><li>one</li><li>two</li></ul>"
        "<p>line<br>break &lt;kept&gt;</p><noscript>no</noscript><template>t</template>"
        "<div>a   b\n c</div>"
    )

    title, text = html_to_text(html)

    assert title == "A page"
    assert text == "one\n\ntwo\n\nline\nbreak <kept>\n\na b\nc"


def test_pages_without_text_give_empty_strings():
    assert html_to_text("") == ("", "")
    assert html_to_text("  <!-- only a comment -->  ") == ("", "")


def test_declared_charset_does_not_override_the_decoded_text():
    html = '<?xml version="1.0" encoding="iso-8859-1"?><meta charset="latin1"><p>café ü</p>'

    assert html_to_text(html) == ("", "café ü")


def test_too_deeply_nested_page_is_refused_not_silently_emptied():
    deep = "<div>" * 300 + "deep text" + "</div>" * 300

    assert html_to_text("<div>" * 200 + "fine" + "</div>" * 200) == ("", "fine")
    with pytest.raises(ValueError, match="Excessive depth"):
        html_to_text(deep)


# Each input is 1 MB. Python's html.parser needs hours for the first one (measured:
# 2 s for 15 KB, 10 s for 30 KB, growing quadratically); selectolax (lexbor) needs
# minutes for the deep-nesting ones. lxml parses each in well under a second.
CRAFTED = {
    "unclosed start tags": "<a ",
    "unclosed attribute values": '<a x="',
    "deep nesting": "<div>",
    "misnested formatting": "<b>x</p>",
    "nested tables": "<table>",
    "unclosed comments": "<!--",
}


@pytest.mark.parametrize("unit", CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_megabyte_is_parsed_without_hanging(unit):
    html = unit * (1_000_000 // len(unit))
    result: list[tuple[str, str] | BaseException] = []

    def parse() -> None:
        try:
            result.append(html_to_text(html))
        except ValueError as exc:  # refusing the page is fine too, hanging is not
            result.append(exc)

    # A daemon thread, so that a regression fails this test instead of stalling the run.
    worker = threading.Thread(target=parse, daemon=True)
    worker.start()
    worker.join(timeout=120)

    assert not worker.is_alive(), "html_to_text is not linear on crafted input"
    assert len(result) == 1
