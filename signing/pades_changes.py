"""Name, for a clerk, what each incremental update of a PDF changed.

pyHanko's difference analysis says whether changes are acceptable; its
reasons name object numbers. This module reads two consecutive revisions and
names what a person would: a page added or removed, a page's content
changed, an annotation added, a form field filled, a signature, a document
time-stamp, validation data. It only describes; the policy judges.
"""

# pyHanko's PDF object model is untyped: its calls are checked by the tests instead.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import HistoricalResolver, PdfFileReader

_MAX_PAGES = 100_000
_MAX_DEPTH = 64
_MAX_FIELDS = 10_000


def revision_changes(reader: PdfFileReader, since: int) -> list[str]:
    """What each revision after revision ``since`` (0-based) changed, in order."""
    changes: list[str] = []
    for revision in range(since + 1, reader.xrefs.total_revisions):
        try:
            named = _named(reader, revision)
        except Exception as exc:  # a hostile file may break the reader: describe, never raise
            named = [f"changes that cannot be read ({type(exc).__name__})"]
        changes.extend(f"revision {revision + 1}: {what}" for what in named)
    return changes


def _named(reader: PdfFileReader, revision: int) -> list[str]:
    old = reader.get_historical_resolver(revision - 1)
    new = reader.get_historical_resolver(revision)
    written = {(r.idnum, r.generation) for r in new.explicit_refs_in_revision()}
    named = _field_changes(old, new) + _page_changes(old, new, written)
    dss = _dss_change(old, new)
    if dss:
        named.append(dss)
    if not named and written:
        named.append(f"{len(written)} rewritten object(s) with no visible effect Rogatory can name")
    return named


def _pages(resolver: HistoricalResolver) -> list[generic.IndirectObject]:
    pages: list[generic.IndirectObject] = []

    def walk(node: generic.PdfObject, depth: int, seen: set[int]) -> None:
        if depth > _MAX_DEPTH or len(pages) > _MAX_PAGES:
            raise ValueError("the page tree is too deep or too large")
        for kid in node.get_object().get("/Kids", ()):
            if not isinstance(kid, generic.IndirectObject) or kid.idnum in seen:
                continue
            obj = kid.get_object()
            if obj.get("/Type") == "/Pages":
                walk(kid, depth + 1, seen | {kid.idnum})
            else:
                pages.append(kid)

    walk(resolver.root.raw_get("/Pages"), 0, set())
    return pages


def _contents(page: generic.DictionaryObject) -> bytes:
    contents = page.get("/Contents")
    if contents is None:
        return b""
    parts = contents if isinstance(contents, generic.ArrayObject) else [contents]
    return b"\n".join(p.get_object().data for p in parts)


def _annotations(page: generic.DictionaryObject) -> list[generic.DictionaryObject]:
    return [a.get_object() for a in page.get("/Annots", ())]


def _page_changes(
    old: HistoricalResolver,
    new: HistoricalResolver,
    written: set[tuple[int, int]],
) -> list[str]:
    old_pages, new_pages = _pages(old), _pages(new)
    named = []
    if len(new_pages) > len(old_pages):
        named.append(f"{len(new_pages) - len(old_pages)} page(s) added")
    elif len(new_pages) < len(old_pages):
        named.append(f"{len(old_pages) - len(new_pages)} page(s) removed")
    for number, (before, after) in enumerate(zip(old_pages, new_pages, strict=False), start=1):
        old_page, new_page = old(before.reference), new(after.reference)
        if (before.idnum, before.generation) != (after.idnum, after.generation):
            named.append(f"page {number} replaced by another page object")
            continue
        if _contents(old_page) != _contents(new_page):
            named.append(f"the content of page {number} changed")
        if (after.idnum, after.generation) in written:
            added = _new_annotations(_annotations(old_page), _annotations(new_page))
            for subtype in added:
                if subtype != "/Widget":
                    named.append(f"a {subtype.lstrip('/')} annotation added on page {number}")
            if _resources(old_page) != _resources(new_page):
                named.append(f"the resources (fonts, images) of page {number} changed")
    return named


def _new_annotations(
    before: list[generic.DictionaryObject], after: list[generic.DictionaryObject]
) -> list[str]:
    seen = {id(a) for a in before}
    count = max(0, len(after) - len(before))
    fresh = [a for a in after if id(a) not in seen][-count:] if count else []
    return [str(a.get("/Subtype", "/Unknown")) for a in fresh]


def _resources(page: generic.DictionaryObject) -> str:
    return repr(page.get("/Resources"))


def _fields(resolver: HistoricalResolver) -> dict[str, tuple[str, str]]:
    """Fully qualified field name -> (field type, value as text)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        top = resolver.root["/AcroForm"]["/Fields"]
    except KeyError:
        return out

    def walk(items: Any, prefix: str, inherited_type: str, depth: int) -> Iterator[None]:
        if depth > _MAX_DEPTH:
            return
        for item in items:
            if len(out) > _MAX_FIELDS:
                return
            field = item.get_object()
            name = str(field.get("/T", ""))
            fq = f"{prefix}.{name}" if prefix and name else name or prefix
            ftype = str(field.get("/FT", inherited_type))
            if "/Kids" in field and any("/T" in k.get_object() for k in field["/Kids"]):
                yield from walk(field["/Kids"], fq, ftype, depth + 1)
                continue
            value = field.get("/V")
            if ftype == "/Sig" and value is not None:
                out[fq] = (ftype, str(value.get_object().get("/Type", "/Sig")))
            else:
                out[fq] = (ftype, repr(value))
            yield None

    for _ in walk(top, "", "", 0):
        pass
    return out


def _field_changes(old: HistoricalResolver, new: HistoricalResolver) -> list[str]:
    before, after = _fields(old), _fields(new)
    named = []
    for name, (ftype, value) in after.items():
        if before.get(name) == (ftype, value):
            continue
        if ftype == "/Sig":
            if value == "/DocTimeStamp":
                named.append(f"document time-stamp {name!r}")
            elif value == "None":
                named.append(f"empty signature field {name!r} added")
            else:
                named.append(f"signature {name!r}")
        elif name in before:
            named.append(f"form field {name!r} filled or changed")
        else:
            named.append(f"form field {name!r} added")
    named.extend(f"form field {name!r} removed" for name in before if name not in after)
    return named


def _dss_change(old: HistoricalResolver, new: HistoricalResolver) -> str | None:
    def summary(resolver: HistoricalResolver) -> tuple[int, ...] | None:
        dss = resolver.root.get("/DSS")
        if dss is None:
            return None
        return tuple(len(dss.get(k, ())) for k in ("/Certs", "/OCSPs", "/CRLs", "/VRI"))

    before, after = summary(old), summary(new)
    if after is not None and after != before:
        return "validation data added to the DSS (certificates, OCSP responses, CRLs)"
    if before is not None and after is None:
        return "the DSS (validation data) removed"
    return None
