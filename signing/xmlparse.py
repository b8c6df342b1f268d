"""The one hardened XML parser of the code base.

No DTD (a document that declares one is refused, not just left unexpanded),
no entities, no network, no XInclude, a bounded size and a bounded depth.
Every XML byte Rogatory reads from outside goes through ``parse_xml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lxml import etree

from .errors import XMLInputError

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        remove_comments=False,
        collect_ids=False,
    )


_PARSER = _new_parser()


def parse_xml(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> etree._Element:
    """Parse ``data`` into a root element, or raise ``XMLInputError`` saying why."""
    if not isinstance(data, bytes):
        raise XMLInputError("XML input must be bytes")
    if not data.strip():
        raise XMLInputError("the document is empty")
    if len(data) > max_bytes:
        raise XMLInputError(f"the document is {len(data)} bytes, above the limit of {max_bytes}")
    # Cheap early refusal before libxml2 reads a DTD at all (UTF-8 and ASCII);
    # the docinfo check below catches every other encoding.
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data[:4096]:
        raise XMLInputError("the document declares a DTD; DTDs and entities are not accepted")
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise XMLInputError(f"the document is not well-formed XML: {exc}") from None
    except ValueError as exc:  # e.g. an encoding declaration lxml refuses
        raise XMLInputError(f"the document cannot be read as XML: {exc}") from None
    if root is None:
        raise XMLInputError("the document has no root element")
    docinfo: Any = root.getroottree().docinfo  # lxml-stubs lack DocInfo.doctype
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XMLInputError("the document declares a DTD; DTDs and entities are not accepted")
    _check_tree(root, max_depth)
    return root


@dataclass(frozen=True, eq=False)
class ParsedXml:
    """Bytes as received and the root ``parse_xml`` read from them, for readers that share a parse.

    Only ``parse_document`` makes one, so the tree is always what the bytes
    say; readers must not modify it (the verifier works on copies).
    """

    data: bytes
    root: etree._Element


def parse_document(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> ParsedXml:
    """``parse_xml`` that keeps the bytes beside the tree; ``XMLInputError`` saying why."""
    return ParsedXml(data, parse_xml(data, max_bytes=max_bytes, max_depth=max_depth))


def _too_deep(max_depth: int) -> etree.XPath:
    xpath = _DEPTH_PROBES.get(max_depth)
    if xpath is None:
        xpath = _DEPTH_PROBES[max_depth] = etree.XPath("boolean(" + "/*" * (max_depth + 1) + ")")
    return xpath


_DEPTH_PROBES: dict[int, etree.XPath] = {}


def _check_tree(root: etree._Element, max_depth: int) -> None:
    # Entities need a DTD, refused above; only the depth is left to bound.
    if _too_deep(max_depth)(root):
        raise XMLInputError(f"the document is nested deeper than {max_depth} levels")
