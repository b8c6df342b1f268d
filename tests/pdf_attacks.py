"""Honest and manipulated signed PDFs for the PAdES verifier's tests.

Built with pyHanko alone (its writer, incremental writer and signer), so the
fixtures need no extra package. The attacks follow the published ones:
shadow attacks (hide, replace, hide-and-replace; Mainka et al., NDSS 2021),
incremental saving attacks and signature wrapping (Mladenov et al., CCS
2019), and certification attacks (Mainka et al., IEEE S&P 2021).

The base document is a three-page request with two text fields on page 1:
``amount`` shows "100 EUR", and ``stamp`` draws an opaque white box saying
"GRANTED" over page text that says "REFUSED" (the shadow the hide attack
uncovers). An unused content stream ("shadow content") waits in the file for
the hide-and-replace attack.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from io import BytesIO

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter
from pyhanko.sign import fields, signers, timestamps
from pyhanko.sign.fields import MDPPerm
from pyhanko_certvalidator import ValidationContext

from gateway.pki import DevPKI

_A4 = [0, 0, 595, 842]


def _dict(**entries: generic.PdfObject) -> generic.DictionaryObject:
    return generic.DictionaryObject({pdf_name(f"/{k}"): v for k, v in entries.items()})


def _stream(text: str, bbox: list[int] | None = None) -> generic.StreamObject:
    header = {}
    if bbox is not None:
        header = {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Form"),
            pdf_name("/BBox"): generic.ArrayObject(generic.NumberObject(n) for n in bbox),
        }
    return generic.StreamObject(header, stream_data=text.encode("latin-1"))


def _appearance(text: str) -> generic.StreamObject:
    """A field appearance: an opaque white box with black text."""
    return _stream(
        f"1 g 0 0 200 24 re f 0 g BT /Helv 12 Tf 4 7 Td ({text}) Tj ET",
        [0, 0, 200, 24],
    )


def base_pdf(pages: int = 3) -> bytes:
    """An unsigned request of ``pages`` pages with the form described above."""
    w = PdfFileWriter()
    font = w.add_object(
        _dict(Type=pdf_name("/Font"), Subtype=pdf_name("/Type1"), BaseFont=pdf_name("/Helvetica"))
    )
    resources = _dict(Font=_dict(F1=font, Helv=font))
    page_refs = []
    for number in range(1, pages + 1):
        text = (
            f"BT /F1 14 Tf 72 770 Td (Request for assistance, page {number} of {pages}) Tj ET\n"
            "BT /F1 12 Tf 72 600 Td (Decision: the request is REFUSED) Tj ET"
            if number == 1
            else f"BT /F1 14 Tf 72 770 Td (Request for assistance, page {number} of {pages}) Tj ET"
        )
        page = PageObject(contents=w.add_object(_stream(text)), media_box=_A4, resources=resources)
        page_refs.append(w.insert_page(page))
    w.add_object(_stream("BT /F1 14 Tf 72 770 Td (Shadow content: pay 1,000,000 EUR) Tj ET"))
    field_refs = []
    for name, value, rect in (
        ("amount", "100 EUR", [300, 700, 500, 724]),
        ("stamp", "GRANTED", [150, 594, 350, 618]),
    ):
        field = _dict(
            Type=pdf_name("/Annot"),
            Subtype=pdf_name("/Widget"),
            FT=pdf_name("/Tx"),
            T=generic.TextStringObject(name),
            V=generic.TextStringObject(value),
            DA=generic.TextStringObject("/Helv 12 Tf 0 g"),
            Rect=generic.ArrayObject(generic.NumberObject(n) for n in rect),
            F=generic.NumberObject(4),
            P=page_refs[0],
            AP=_dict(
                N=w.add_object(_appearance(f"Decision: {value}" if name == "stamp" else value))
            ),
        )
        ref = w.add_object(field)
        w.register_annotation(page_refs[0], ref)
        field_refs.append(ref)
    w.root[pdf_name("/AcroForm")] = _dict(
        Fields=generic.ArrayObject(field_refs), DR=_dict(Font=_dict(Helv=font))
    )
    w.update_root()
    out = BytesIO()
    w.write(out)
    return out.getvalue()


def pdf_signer(pki: DevPKI, name: str = "ES-MJ") -> signers.SimpleSigner:
    # the signer's issuers up to (not including) the root
    chain = [str(pki.cert_path(n)) for n in ("signers-ca",) if name != "signers-ca"]
    signer = signers.SimpleSigner.load(
        str(pki.key_path(name)), str(pki.cert_path(name)), ca_chain_files=chain
    )
    assert signer is not None
    return signer


def sign(
    data: bytes,
    signer: signers.Signer,
    *,
    field: str = "Sig1",
    certify: MDPPerm | None = None,
    timestamper: timestamps.TimeStamper | None = None,
    lta: ValidationContext | None = None,
) -> bytes:
    """``data`` signed as PAdES (CAdES detached) in a new invisible field."""
    meta = signers.PdfSignatureMetadata(
        field_name=field,
        subfilter=fields.SigSeedSubFilter.PADES,
        certify=certify is not None,
        docmdp_permissions=certify or MDPPerm.FILL_FORMS,
        embed_validation_info=lta is not None,
        use_pades_lta=lta is not None,
        validation_context=lta,
    )
    writer = IncrementalPdfFileWriter(BytesIO(data))
    out = signers.PdfSigner(meta, signer, timestamper=timestamper).sign_pdf(writer)
    return bytes(out.getvalue())


def _update(data: bytes, change: object) -> bytes:
    """Apply ``change(writer)`` as one incremental update."""
    writer = IncrementalPdfFileWriter(BytesIO(data))
    change(writer)  # type: ignore[operator]
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _field(writer: IncrementalPdfFileWriter, name: str) -> generic.IndirectObject:
    for ref in writer.root["/AcroForm"]["/Fields"]:
        if ref.get_object()["/T"] == name:
            return ref
    raise KeyError(name)


def _page_ref(writer: IncrementalPdfFileWriter, index: int) -> generic.IndirectObject:
    ref = writer.root["/Pages"]["/Kids"].raw_get(index)
    assert isinstance(ref, generic.IndirectObject)
    return ref


# --- shadow attacks (NDSS 2021)


def shadow_hide(signed: bytes) -> bytes:
    """Hide: the white "GRANTED" box is given an empty appearance; "REFUSED" shows."""

    def change(w: IncrementalPdfFileWriter) -> None:
        ref = _field(w, "stamp")
        ref.get_object()[pdf_name("/AP")] = _dict(N=w.add_object(_stream("", [0, 0, 200, 24])))
        w.mark_update(ref)

    return _update(signed, change)


def shadow_replace(signed: bytes, value: str = "1,000,000 EUR") -> bytes:
    """Replace: the amount field gets another value and appearance (looks like form filling)."""

    def change(w: IncrementalPdfFileWriter) -> None:
        ref = _field(w, "amount")
        field = ref.get_object()
        field[pdf_name("/V")] = generic.TextStringObject(value)
        field[pdf_name("/AP")] = _dict(N=w.add_object(_appearance(value)))
        w.mark_update(ref)

    return _update(signed, change)


def shadow_replace_in_place(signed: bytes, value: str = "1,000,000 EUR") -> bytes:
    """Replace by rewriting the amount field's existing appearance stream object."""

    def change(w: IncrementalPdfFileWriter) -> None:
        ref = _field(w, "amount")
        appearance = ref.get_object()["/AP"].raw_get("/N")
        stream = appearance.get_object()
        stream._data = _appearance(value).data  # same object number, new bytes
        stream._encoded_data = None
        w.mark_update(appearance)

    return _update(signed, change)


def shadow_hide_and_replace(signed: bytes) -> bytes:
    """Hide-and-replace: page 1 now shows the shadow content stream that was signed unused."""

    def change(w: IncrementalPdfFileWriter) -> None:
        page_ref = _page_ref(w, 0)
        size = int(w.prev.trailer["/Size"])
        shadow = next(n for n in range(1, size) if _is_shadow(w, n))
        page_ref.get_object()[pdf_name("/Contents")] = generic.IndirectObject(shadow, 0, w)
        w.mark_update(page_ref)

    return _update(signed, change)


def _is_shadow(w: IncrementalPdfFileWriter, idnum: int) -> bool:
    try:
        obj = w.prev.get_object(generic.Reference(idnum, 0, w.prev))
    except Exception:
        return False
    return isinstance(obj, generic.StreamObject) and b"Shadow content" in obj.data


# --- incremental saving attacks (CCS 2019)


def change_page_content(signed: bytes, page: int = 2) -> bytes:
    """Page ``page`` (1-based) gets a new content stream."""

    def change(w: IncrementalPdfFileWriter) -> None:
        page_ref = _page_ref(w, page - 1)
        text = "BT /F1 14 Tf 72 770 Td (Request withdrawn) Tj ET"
        page_ref.get_object()[pdf_name("/Contents")] = w.add_object(_stream(text))
        w.mark_update(page_ref)

    return _update(signed, change)


def add_page(signed: bytes) -> bytes:
    def change(w: IncrementalPdfFileWriter) -> None:
        font = _page_ref(w, 0).get_object()["/Resources"]
        content = w.add_object(_stream("BT /F1 14 Tf 72 770 Td (An added page) Tj ET"))
        w.insert_page(PageObject(contents=content, media_box=_A4, resources=font))

    return _update(signed, change)


def remove_page(signed: bytes) -> bytes:
    def change(w: IncrementalPdfFileWriter) -> None:
        pages_ref = w.root.raw_get("/Pages")
        pages = pages_ref.get_object()
        kids = pages["/Kids"]
        pages[pdf_name("/Kids")] = generic.ArrayObject(list(kids)[:-1])
        pages[pdf_name("/Count")] = generic.NumberObject(len(kids) - 1)
        w.mark_update(pages_ref)

    return _update(signed, change)


def add_annotation(signed: bytes) -> bytes:
    """A FreeText annotation over page 1 that writes "GRANTED" on it."""

    def change(w: IncrementalPdfFileWriter) -> None:
        annot = _dict(
            Type=pdf_name("/Annot"),
            Subtype=pdf_name("/FreeText"),
            Rect=generic.ArrayObject(generic.NumberObject(n) for n in (60, 590, 400, 620)),
            Contents=generic.TextStringObject("Decision: GRANTED"),
            DA=generic.TextStringObject("/Helv 12 Tf 0 g"),
        )
        w.register_annotation(_page_ref(w, 0), w.add_object(annot))

    return _update(signed, change)


# --- byte ranges and forged signatures (CCS 2019: USF, signature wrapping)


def _byte_range(data: bytes, occurrence: int = -1) -> tuple[re.Match[bytes], list[int]]:
    matches = list(re.finditer(rb"/ByteRange \[(\d+) (\d+) (\d+) (\d+)\]\s*", data))
    match = matches[occurrence]
    return match, [int(n) for n in match.groups()]


def _hex_contents(data: bytes, byte_range: list[int]) -> tuple[int, int]:
    """Start and end of the hex digits of the /Contents string between the ranges."""
    return byte_range[1] + 1, byte_range[2] - 1


def uncovered_byte_range(signed: bytes, signer: signers.Signer) -> bytes:
    """Re-sign with a byte range that leaves the /ByteRange entry itself uncovered.

    The signature is cryptographically valid; the bytes between the
    /Contents string and the second range can then be changed at will
    (here, a comment is written into the padding).
    """
    match, (_, len1, start2, len2) = _byte_range(signed)
    skip = match.end() - start2  # the /ByteRange entry and its padding
    new_range = f"/ByteRange [0 {len1} {start2 + skip} {len2 - skip}]".encode()
    padded = new_range.ljust(match.end() - match.start() - 1) + b"\n"
    data = bytearray(signed[: match.start()] + padded + signed[match.end() :])
    covered = bytes(data[:len1]) + bytes(data[start2 + skip : start2 + len2])
    cms = asyncio.run(signer.async_sign(hashlib.sha256(covered).digest(), "sha256", use_pades=True))
    begin, end = _hex_contents(signed, [0, len1, start2, len2])
    hex_sig = cms.dump().hex().encode().ljust(end - begin, b"0")
    data[begin:end] = hex_sig
    # the attacker's edit, in bytes no signature covers
    tail = data.rfind(b"]", match.start(), match.start() + len(padded)) + 1
    data[tail + 1 : tail + 7] = b"%owned"
    return bytes(data)


def overlapping_byte_range(signed: bytes) -> bytes:
    """The second range starts inside the first (signature wrapping style)."""
    match, (_, len1, start2, len2) = _byte_range(signed)
    new_range = f"/ByteRange [0 {len1} {len1 - 10} {len2 + (start2 - len1) + 10}]".encode()
    padded = new_range.ljust(match.end() - match.start() - 1) + b"\n"
    return signed[: match.start()] + padded + signed[match.end() :]


def forged_second_signature(signed: bytes, signer: signers.Signer) -> bytes:
    """A second signature field whose signature is the first one's CMS, copied."""
    twice = sign(signed, signer, field="Sig2")
    _, first = _byte_range(twice, 0)
    _, second = _byte_range(twice, -1)
    b1, e1 = _hex_contents(twice, first)
    b2, e2 = _hex_contents(twice, second)
    stolen = twice[b1:e1].rstrip(b"0")
    stolen += b"0" * (len(stolen) % 2)
    data = bytearray(twice)
    data[b2:e2] = stolen.ljust(e2 - b2, b"0")[: e2 - b2]
    return bytes(data)


def unsigned_signature_value(signed: bytes) -> bytes:
    """Universal signature forgery: a signature dictionary whose /Contents is all zeros."""
    _, byte_range = _byte_range(signed)
    begin, end = _hex_contents(signed, byte_range)
    data = bytearray(signed)
    data[begin:end] = b"0" * (end - begin)
    return bytes(data)


# --- other bad input


def encrypted_pdf(data: bytes) -> bytes:
    """``data`` (signed or not) re-written with AES-256 encryption."""
    from pyhanko.pdf_utils.writer import copy_into_new_writer

    writer = copy_into_new_writer(PdfFileReader(BytesIO(data)))
    writer.encrypt("owner secret", "")
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


NOT_A_PDF = b"PK\x03\x04 this is a ZIP archive, not a PDF\n" + bytes(range(256))
