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
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import HistoricalResolver, PdfFileReader

_MAX_PAGES = 100_000
_MAX_DEPTH = 64
_MAX_FIELDS = 10_000


class ChangeKind(StrEnum):
    SIGNATURE = "signature"
    DOCUMENT_TIMESTAMP = "document time-stamp"
    VALIDATION_DATA = "validation data"
    SIGNATURE_FIELD = "signature field"
    FORM_FIELD_VALUE = "form field value"
    # a field's appearance changed while its value did not: a shadow "hide"
    FORM_FIELD_APPEARANCE = "form field appearance"
    FORM_FIELD_STRUCTURE = "form field structure"
    PAGES = "pages"
    PAGE_CONTENT = "page content"
    ANNOTATION = "annotation"
    UNNAMED = "unnamed"


@dataclass(frozen=True)
class Change:
    """One change one revision made, named for a person."""

    revision: int  # 1-based, as a person counts
    kind: ChangeKind
    what: str

    def __str__(self) -> str:
        return f"revision {self.revision}: {self.what}"


def revision_changes(reader: PdfFileReader, since: int) -> list[Change]:
    """What each revision after revision ``since`` (0-based) changed, in order."""
    changes: list[Change] = []
    for revision in range(since + 1, reader.xrefs.total_revisions):
        try:
            named = _named(reader, revision)
        except Exception as exc:  # a hostile file may break the reader: describe, never raise
            named = [(ChangeKind.UNNAMED, f"changes that cannot be read ({type(exc).__name__})")]
        changes.extend(Change(revision + 1, kind, what) for kind, what in named)
    return changes


_Named = list[tuple[ChangeKind, str]]


def _named(reader: PdfFileReader, revision: int) -> _Named:
    old = reader.get_historical_resolver(revision - 1)
    new = reader.get_historical_resolver(revision)
    written = {(r.idnum, r.generation) for r in new.explicit_refs_in_revision()}
    named = _field_changes(old, new, written) + _page_changes(old, new, written)
    dss = _dss_change(old, new)
    if dss:
        named.append((ChangeKind.VALIDATION_DATA, dss))
    if not named and written:
        what = f"{len(written)} rewritten object(s) that Rogatory cannot name"
        named.append((ChangeKind.UNNAMED, what))
    return named


def _get(container: Any, key: str, default: Any = None) -> Any:
    """An entry of a PDF dictionary, dereferenced; ``default`` when absent."""
    try:
        return container[key]
    except KeyError:
        return default


def _pages(resolver: HistoricalResolver) -> list[generic.IndirectObject]:
    pages: list[generic.IndirectObject] = []

    def walk(node: generic.PdfObject, depth: int, seen: set[int]) -> None:
        if depth > _MAX_DEPTH or len(pages) > _MAX_PAGES:
            raise ValueError("the page tree is too deep or too large")
        for kid in _get(node.get_object(), "/Kids", ()):
            if not isinstance(kid, generic.IndirectObject) or kid.idnum in seen:
                continue
            obj = kid.get_object()
            if _get(obj, "/Type") == "/Pages":
                walk(kid, depth + 1, seen | {kid.idnum})
            else:
                pages.append(kid)

    walk(resolver.root.raw_get("/Pages"), 0, set())
    return pages


def _refs(page: generic.DictionaryObject, key: str) -> tuple[tuple[int, int], ...]:
    """The objects an entry of a page points at (content streams, annotations)."""
    try:
        value = page.raw_get(key)
    except KeyError:
        return ()
    if isinstance(value, generic.IndirectObject):
        resolved = value.get_object()
        if not isinstance(resolved, generic.ArrayObject):
            return ((value.idnum, value.generation),)
        value = resolved
    if isinstance(value, generic.ArrayObject):
        return tuple(
            (item.idnum, item.generation)
            for item in (value.raw_get(i) for i in range(len(value)))
            if isinstance(item, generic.IndirectObject)
        )
    return ((-1, 0),)  # a direct object: compared by the page dictionary itself


def _page_changes(
    old: HistoricalResolver,
    new: HistoricalResolver,
    written: set[tuple[int, int]],
) -> _Named:
    old_pages, new_pages = _pages(old), _pages(new)
    named: _Named = []
    if len(new_pages) > len(old_pages):
        named.append((ChangeKind.PAGES, f"{len(new_pages) - len(old_pages)} page(s) added"))
    elif len(new_pages) < len(old_pages):
        named.append((ChangeKind.PAGES, f"{len(old_pages) - len(new_pages)} page(s) removed"))
    for number, (before, after) in enumerate(zip(old_pages, new_pages, strict=False), start=1):
        key = (after.idnum, after.generation)
        if (before.idnum, before.generation) != key:
            named.append((ChangeKind.PAGES, f"page {number} replaced by another page object"))
            continue
        old_page, new_page = before.get_object(), after.get_object()
        contents = _refs(new_page, "/Contents")
        if contents != _refs(old_page, "/Contents") or written.intersection(contents):
            named.append((ChangeKind.PAGE_CONTENT, f"the content of page {number} changed"))
        if key not in written:
            continue
        old_annots = set(_refs(old_page, "/Annots"))
        for ref in _refs(new_page, "/Annots"):
            if ref in old_annots or ref[0] < 0:
                continue
            subtype = str(_get(new.get_object(generic.Reference(*ref, pdf=new)), "/Subtype"))
            if subtype != "/Widget":
                what = f"a {subtype.lstrip('/')} annotation added on page {number}"
                named.append((ChangeKind.ANNOTATION, what))
        if repr(_get(old_page, "/Resources")) != repr(_get(new_page, "/Resources")):
            what = f"the resources (fonts, images) of page {number} changed"
            named.append((ChangeKind.PAGE_CONTENT, what))
    return named


def _fields(resolver: HistoricalResolver) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """Fully qualified field name -> (type, value as text, appearance object numbers)."""
    out: dict[str, tuple[str, str, tuple[int, ...]]] = {}
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
            name = str(_get(field, "/T", ""))
            fq = f"{prefix}.{name}" if prefix and name else name or prefix
            ftype = str(_get(field, "/FT", inherited_type))
            kids = _get(field, "/Kids", ())
            if any("/T" in k.get_object() for k in kids):
                yield from walk(kids, fq, ftype, depth + 1)
                continue
            value = _get(field, "/V")
            if ftype == "/Sig" and value is not None:
                text = str(_get(value.get_object(), "/Type", "/Sig"))
            else:
                text = repr(value)
            widgets = [k.get_object() for k in kids] or [field]
            out[fq] = (ftype, text, tuple(_appearances(w) for w in widgets))
            yield None

    for _ in walk(top, "", "", 0):
        pass
    return out


def _appearances(widget: generic.DictionaryObject) -> int:
    """The object number of a widget's normal appearance (0 when direct or absent)."""
    try:
        normal = widget["/AP"].raw_get("/N")
    except (KeyError, AttributeError, TypeError):  # a malformed /AP is pyHanko's to judge
        return 0
    return normal.idnum if isinstance(normal, generic.IndirectObject) else 0


def _field_changes(
    old: HistoricalResolver, new: HistoricalResolver, written: set[tuple[int, int]]
) -> _Named:
    before, after = _fields(old), _fields(new)
    named: _Named = []
    for name, (ftype, value, appearances) in after.items():
        previous = before.get(name)
        # the same appearance object, written again: its bytes were replaced in place
        rewritten = previous is not None and previous[2] == appearances
        rewritten = rewritten and any((n, 0) in written for n in appearances if n)
        if previous == (ftype, value, appearances) and not rewritten:
            continue
        if ftype == "/Sig":
            if value == "/DocTimeStamp":
                named.append((ChangeKind.DOCUMENT_TIMESTAMP, f"document time-stamp {name!r}"))
            elif value == "None":
                named.append((ChangeKind.SIGNATURE_FIELD, f"empty signature field {name!r} added"))
            else:
                named.append((ChangeKind.SIGNATURE, f"signature {name!r}"))
        elif name not in before:
            named.append((ChangeKind.FORM_FIELD_STRUCTURE, f"form field {name!r} added"))
        elif before[name][1] != value:
            what = f"form field {name!r} filled in or changed"
            if rewritten:
                what += ", its appearance stream rewritten in place"
            named.append((ChangeKind.FORM_FIELD_VALUE, what))
        else:
            how = "rewritten in place" if rewritten else "changed"
            what = f"the appearance of form field {name!r} {how} while its value did not change"
            named.append((ChangeKind.FORM_FIELD_APPEARANCE, what))
    named.extend(
        (ChangeKind.FORM_FIELD_STRUCTURE, f"form field {name!r} removed")
        for name in before
        if name not in after
    )
    return named


def _dss_change(old: HistoricalResolver, new: HistoricalResolver) -> str | None:
    def summary(resolver: HistoricalResolver) -> tuple[int, ...] | None:
        dss = _get(resolver.root, "/DSS")
        if dss is None:
            return None
        return tuple(len(_get(dss, k, ())) for k in ("/Certs", "/OCSPs", "/CRLs", "/VRI"))

    before, after = summary(old), summary(new)
    if after is not None and after != before:
        return "validation data added to the DSS (certificates, OCSP responses, CRLs)"
    if before is not None and after is None:
        return "the DSS (validation data) removed"
    return None
