"""Small unsigned PDFs for tests and benchmarks, written by hand (no dependency).

`make_pdf(pages)` returns a valid PDF 1.7 of `pages` A4 pages, each with a line
of Helvetica text, a classic cross-reference table and a trailer with an /ID.
`encrypt_pdf` wraps one with AES-256 through pyHanko's writer.
"""

from __future__ import annotations

import hashlib
from io import BytesIO

_A4 = (595, 842)


def make_pdf(pages: int = 1, *, text: str = "Rogatory test document") -> bytes:
    """A valid, unsigned PDF with `pages` pages, each showing `text` and its number."""
    if pages < 1:
        raise ValueError("a PDF needs at least one page")
    objects: list[bytes] = []  # object n is objects[n - 1]
    page_ids = [4 + 2 * i for i in range(pages)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = b" ".join(b"%d 0 R" % n for n in page_ids)
    objects.append(b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    for i in range(pages):
        page = (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>"
        ) % (_A4[0], _A4[1], page_ids[i] + 1)
        line = f"BT /F1 14 Tf 72 770 Td ({safe}, page {i + 1} of {pages}) Tj ET\n"
        content = line.encode("latin-1")
        stream = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content)
        objects += [page, stream]

    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    doc_id = hashlib.md5(bytes(out), usedforsecurity=False).hexdigest().encode()
    out += b"trailer\n<< /Size %d /Root 1 0 R /ID [<%s> <%s>] >>\n" % (
        len(objects) + 1,
        doc_id,
        doc_id,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(out)


def encrypt_pdf(data: bytes, user_password: str = "secret") -> bytes:  # noqa: S107
    """`data` encrypted with AES-256 (PDF 2.0 standard security handler)."""
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.pdf_utils.writer import copy_into_new_writer

    writer = copy_into_new_writer(PdfFileReader(BytesIO(data)))
    writer.encrypt(owner_pass="owner-" + user_password, user_pass=user_password)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()
