"""HTML pages to plain text for the corpus, parsed by lxml (libxml2's HTML parser).

Corpus files may come from people who should not be able to stall indexing, so
the parser must take linear time on any input. Python's ``html.parser`` does not:
15 KB of ``"<a "`` takes seconds and 150 KB minutes. selectolax (lexbor) was
measured too and is quadratic on deep nesting (1 MB of ``<div>`` took minutes).
libxml2 stays linear on all of these; it also refuses to nest deeper than 256
elements, and such a page is rejected rather than indexed with its text missing.
"""

from __future__ import annotations

import re

import lxml.etree

# Elements whose content is never readable text.
_SKIP = {"script", "style", "noscript", "template"}
# Elements that start a new line of text when rendered.
_BLOCK = {
    "p", "div", "section", "article", "header", "footer", "main", "nav", "aside",
    "br", "hr", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr", "td", "th",
    "pre", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "title", "figure",
}  # fmt: skip
# Paragraph-like elements: a blank line before and after, not just a line break.
_PARAGRAPH = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table"}
# Elements without content: one break where they stand, not one per tag event.
_VOID = {"br", "hr"}


class _TextExtractor:
    """Collects visible text, the <title> and the first <h1> from start/end/text events."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.title = ""
        self.h1 = ""
        self._in_title = False
        self._h1_state = "before"  # before -> inside -> done: only the first <h1> counts
        self._skip_depth = 0

    def start(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
        elif tag == "title":
            self._in_title = True
        elif tag == "h1" and self._h1_state == "before":
            self._h1_state = "inside"
        if tag in _BLOCK:
            self.parts.append(_block_break(tag))

    def end(self, tag: str) -> None:
        if tag in _SKIP and self._skip_depth:
            self._skip_depth -= 1
        elif tag == "title":
            self._in_title = False
        elif tag == "h1" and self._h1_state == "inside":
            self._h1_state = "done"
        if tag in _BLOCK and tag not in _VOID:
            self.parts.append(_block_break(tag))

    def data(self, data: str) -> None:
        if self._in_title:
            # <title> usually sits in <head>: keep it as the title, not as body text.
            self.title += data
            return
        if self._skip_depth:
            return
        if self._h1_state == "inside":
            self.h1 += data
        self.parts.append(data)


def _block_break(tag: str) -> str:
    """Paragraph-like elements become blank lines, other blocks plain line breaks."""
    return "\n\n" if tag in _PARAGRAPH else "\n"


def html_to_text(html: str) -> tuple[str, str]:
    """Strip tags from an HTML page; returns ``(title, text)``.

    The title is the <title> element, else the first <h1>. Whitespace is
    collapsed within lines and blank lines are kept as paragraph breaks, so the
    chunker can still prefer paragraph boundaries. Raises ``ValueError`` when
    libxml2 gives up on the page (nesting deeper than 256 elements), whose text
    would otherwise be silently lost.
    """
    # The text is already decoded, so the bytes handed over are UTF-8 whatever
    # the page's own <meta charset> or XML declaration claims.
    parser = lxml.etree.HTMLParser(
        encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True
    )
    root = lxml.etree.fromstring(html.encode("utf-8", "replace"), parser)
    fatal = parser.error_log.filter_from_level(lxml.etree.ErrorLevels.FATAL)
    if fatal:
        raise ValueError(f"HTML parser gave up: {fatal[0].message}")
    if root is None:  # nothing but whitespace or comments
        return "", ""
    extractor = _TextExtractor()
    for event, element in lxml.etree.iterwalk(root, events=("start", "end")):
        tag = element.tag if isinstance(element.tag, str) else None
        if event == "start":
            if tag is not None:
                extractor.start(tag)
                if element.text:
                    extractor.data(element.text)
        else:
            if tag is not None:
                extractor.end(tag)
            # An element's tail is the text after it, inside its parent.
            if element.tail:
                extractor.data(element.tail)
    text = "".join(extractor.parts)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join(extractor.title.split()) or " ".join(extractor.h1.split())
    return title, text
