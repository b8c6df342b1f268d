"""Pages of plain text for the written record: A4, Courier, wrapped, numbered.

The record is read by a clerk and checked by a machine, so the text is laid
out as lines in a fixed-width standard font (nothing to embed, every digest
on one line and copied out exactly by ``pdftotext``). Characters outside
WinAnsiEncoding are written as ``\\u{XXXX}`` so that nothing is lost silently.
"""

# pyHanko's PDF writer is untyped; every call into it is one of these.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

from gateway.audit import JSON, canonical_json

PAGE_WIDTH, PAGE_HEIGHT = 595.28, 841.89  # A4 in points
MARGIN = 50.0
FONT_SIZE = 8.5
LEADING = 11.0
COLUMNS = int((PAGE_WIDTH - 2 * MARGIN) / (0.6 * FONT_SIZE))  # Courier is 600/1000 em wide
ROWS = int((PAGE_HEIGHT - 2 * MARGIN) / LEADING) - 2  # two rows kept for the footer


@dataclass(frozen=True)
class Line:
    """One line of the record as written; a heading is set in bold."""

    text: str = ""
    heading: bool = False


def heading(text: str) -> list[Line]:
    return [Line(), Line(text, heading=True), Line("=" * min(len(text), COLUMNS))]


def fields(pairs: Sequence[tuple[str, str | None]]) -> list[Line]:
    """Labelled values in one aligned column; a missing value is a dash."""
    width = max(len(label) for label, _ in pairs) + 2
    return [Line(f"{label + ':':<{width}}{'-' if v is None else v}") for label, v in pairs]


def verdict_lines(verdict: Mapping[str, JSON] | None) -> list[Line]:
    """A recorded verdict (``Verdict.to_json`` or a report): indication first, then the rest."""
    if verdict is None:
        return [Line("  no verdict recorded")]
    known = ("indication", "subindication", "reason")
    main = " / ".join(str(verdict[k]) for k in known[:2] if verdict.get(k))
    lines = [Line(f"  {main or 'no indication'}")]
    if verdict.get("reason"):
        lines.append(Line(f"  reason: {verdict['reason']}"))
    for key, value in verdict.items():
        if key not in known:
            lines.append(Line(f"  {key}: {_json(value)}"))
    return lines


def _json(value: JSON) -> str:
    try:
        return canonical_json(value).decode("utf-8")
    except Exception:  # a record is never refused for the format of a stored verdict
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def escape_text(text: str) -> str:
    """``text`` with what WinAnsiEncoding cannot show written as ``\\u{XXXX}``."""
    out = []
    for char in text:
        try:
            char.encode("cp1252")
        except UnicodeEncodeError:
            out.append(f"\\u{{{ord(char):04X}}}")
        else:
            out.append(char if char.isprintable() else f"\\u{{{ord(char):04X}}}")
    return "".join(out)


def wrap(line: Line) -> Iterator[Line]:
    """Cut a line to the page width; continuations are indented under the first."""
    text = escape_text(line.text)
    if len(text) <= COLUMNS:
        yield Line(text, line.heading)
        return
    indent = " " * min(len(text) - len(text.lstrip(" ")) + 4, COLUMNS // 2)
    first, rest = text[:COLUMNS], text[COLUMNS:]
    yield Line(first, line.heading)
    width = COLUMNS - len(indent)
    for start in range(0, len(rest), width):
        yield Line(indent + rest[start : start + width], line.heading)


def paginate(lines: Sequence[Line]) -> list[list[Line]]:
    """Cut lines into pages; a block (a heading and what follows it) that fits on a page
    is not split across two."""
    blocks: list[list[Line]] = []
    for line in lines:
        if not blocks or (line.heading and not blocks[-1][-1].heading):
            blocks.append([])
        blocks[-1].append(line)
    pages: list[list[Line]] = [[]]
    for block in blocks:
        if pages[-1] and len(pages[-1]) + len(block) > ROWS and len(block) <= ROWS:
            pages.append([])
        for line in block:
            if len(pages[-1]) == ROWS:
                pages.append([])
            pages[-1].append(line)
    return pages


def _show(text: str) -> bytes:
    return b"<" + text.encode("cp1252").hex().encode("ascii") + b"> Tj"


def _page_content(lines: Sequence[Line], footer: str) -> bytes:
    ops = [b"BT", b"%.2f TL" % LEADING, b"%.2f %.2f Td" % (MARGIN, PAGE_HEIGHT - MARGIN)]
    bold = None
    for line in lines:
        if line.heading is not bold:
            bold = line.heading
            ops.append(b"/%s %.2f Tf" % (b"FB" if bold else b"FR", FONT_SIZE))
        ops.append(b"T*" if not line.text else _show(line.text) + b" T*")
    ops.append(b"ET")
    ops += [b"BT", b"/FR %.2f Tf" % FONT_SIZE, b"%.2f %.2f Td" % (MARGIN, MARGIN / 2)]
    ops += [_show(escape_text(footer)), b"ET"]
    return b"\n".join(ops) + b"\n"


def _font(base: str) -> generic.DictionaryObject:
    return generic.DictionaryObject(
        {
            generic.pdf_name("/Type"): generic.pdf_name("/Font"),
            generic.pdf_name("/Subtype"): generic.pdf_name("/Type1"),
            generic.pdf_name("/BaseFont"): generic.pdf_name(base),
            generic.pdf_name("/Encoding"): generic.pdf_name("/WinAnsiEncoding"),
        }
    )


def add_text_pages(writer: PdfFileWriter, lines: Sequence[Line], footer: str) -> int:
    """Write ``lines`` onto new pages, each with ``footer`` and its page number; return pages."""
    pages = paginate([piece for line in lines for piece in wrap(line)])
    fonts = generic.DictionaryObject(
        {
            generic.pdf_name("/FR"): writer.add_object(_font("/Courier")),
            generic.pdf_name("/FB"): writer.add_object(_font("/Courier-Bold")),
        }
    )
    resources = generic.DictionaryObject({generic.pdf_name("/Font"): fonts})
    for number, page_lines in enumerate(pages, start=1):
        content = generic.StreamObject(
            stream_data=_page_content(page_lines, f"{footer} - page {number} of {len(pages)}")
        )
        content.compress()
        page = PageObject(
            writer.add_object(content), (0, 0, PAGE_WIDTH, PAGE_HEIGHT), resources=resources
        )
        writer.insert_page(page)
    return len(pages)
