"""Dereferencing an XML-DSig ``Reference`` and applying its transforms.

Only same-document references are followed (nothing is fetched); an ``Id``
that matches more than one element is refused, since that is how signature
wrapping hides a forged element beside the signed one.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from typing import Any

from lxml import etree

from .xmldsig import BASE64, C14N, DS, ENVELOPED, UnsupportedAlgorithm, canonicalize

XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
# Recommended by XAdES and used widely: "every node but signatures".
_XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"
_NOT_SIGNATURE = re.compile(r"not\(\s*ancestor-or-self::([A-Za-z_][\w.-]*):Signature\s*\)")


class ReferenceError_(Exception):
    """A reference that cannot be resolved or processed; ``missing`` if simply absent."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class Dereferenced:
    """What a reference points at: a subtree (or the document), or octets."""

    node: etree._Element | None
    whole_document: bool
    octets: bytes | None = None


_ID_ATTRIBUTES = frozenset({"Id", "ID", "id", XML_ID})
# Attribute values first, names after: one pass, about 8x faster than a
# predicate on each of the four names over every element.
_ATTRIBUTES_EQUAL_TO = etree.XPath("//@*[. = $v]")


def find_by_id(root: etree._Element, value: str) -> list[etree._Element]:
    """Every element with an ``Id``, ``ID``, ``id`` or ``xml:id`` of ``value``."""
    found: list[etree._Element] = []
    attributes: Any = _ATTRIBUTES_EQUAL_TO(root, v=value)  # "smart strings" lxml-stubs lack
    for attribute in attributes:
        owner = attribute.getparent()
        if attribute.attrname in _ID_ATTRIBUTES and not any(owner is e for e in found):
            found.append(owner)
    return found


def dereference(root: etree._Element, uri: str | None) -> Dereferenced:
    """Resolve a same-document URI; anything else is missing (never fetched)."""
    if uri is None:
        raise ReferenceError_("a reference without URI names no data", missing=True)
    if uri == "" or uri == "#xpointer(/)":
        return Dereferenced(root, whole_document=True)
    if not uri.startswith("#"):
        raise ReferenceError_(f"detached content {uri!r} is not available", missing=True)
    ident = uri[1:]
    if ident.startswith("xpointer(id(") and ident.endswith("))"):
        ident = ident[len("xpointer(id(") : -2].strip("'\"")
    matches = find_by_id(root, ident)
    if not matches:
        raise ReferenceError_(f"no element has the Id {ident!r}", missing=True)
    if len(matches) > 1:
        raise ReferenceError_(
            f"{len(matches)} elements share the Id {ident!r}: refused as signature wrapping"
        )
    return Dereferenced(matches[0], whole_document=matches[0] is root)


def _index_path(element: etree._Element) -> list[int]:
    """Child positions from the root down to ``element``."""
    path: list[int] = []
    parent = element.getparent()
    while parent is not None:
        path.append(parent.index(element))
        element, parent = parent, parent.getparent()
    return path[::-1]


def _follow(root: etree._Element, path: list[int]) -> etree._Element:
    node = root
    for index in path:
        node = node[index]
    return node


def _remove_keeping_text(element: etree._Element) -> None:
    """Remove ``element`` from its parent, leaving the text that followed it in place."""
    parent = element.getparent()
    if parent is None:
        return
    tail = element.tail
    if tail:
        index = parent.index(element)
        if index:
            previous = parent[index - 1]
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    element.tail = None
    parent.remove(element)


def _without(node: etree._Element, excluded: list[etree._Element]) -> etree._Element:
    """``node`` in a copy of its document from which ``excluded`` are removed.

    The received tree is never modified: taking an element out of an lxml tree
    and putting it back re-declares namespaces inside it (``xades:`` becomes
    ``ns3:``), which changes the canonical form of everything read afterwards.
    """
    excluded = [e for e in excluded if e is not node]
    if not excluded:
        return node
    tree = node.getroottree()
    root = tree.getroot()
    copy_root = copy.deepcopy(tree).getroot()
    copies = [
        _follow(copy_root, _index_path(e)) for e in excluded if e.getroottree().getroot() is root
    ]
    target = _follow(copy_root, _index_path(node))
    for element in copies:
        _remove_keeping_text(element)
    return target


def _serialize(target: Dereferenced, method: C14N, excluded: list[etree._Element]) -> bytes:
    assert target.node is not None
    comments = method.with_comments and not target.whole_document
    node = _without(target.node, excluded)
    if target.whole_document:
        return etree.tostring(
            node.getroottree(), method="c14n", exclusive=method.exclusive, with_comments=comments
        )
    return canonicalize(node, method, with_comments=comments)


def _string_value(target: Dereferenced, excluded: list[etree._Element]) -> bytes:
    assert target.node is not None
    node = _without(target.node, excluded)
    return "".join(str(t) for t in node.itertext()).encode("utf-8")


def apply_transforms(
    reference: etree._Element, signature: etree._Element, target: Dereferenced
) -> tuple[bytes, tuple[str, ...]]:
    """The octets a reference's digest is computed over, and the transform names applied."""
    excluded: list[etree._Element] = []
    octets = target.octets
    names: list[str] = []
    transforms = reference.find(f"{{{DS}}}Transforms")
    for transform in transforms if transforms is not None else ():
        if not isinstance(transform.tag, str):
            continue
        algorithm = transform.get("Algorithm") or ""
        names.append(algorithm)
        if octets is not None and algorithm != BASE64:
            raise UnsupportedAlgorithm(f"transform {algorithm!r} cannot follow a base64 decoding")
        if algorithm == ENVELOPED:
            excluded.append(signature)
        elif algorithm == _XPATH and _is_not_signature_xpath(transform):
            excluded.extend(
                target.node.iter(f"{{{DS}}}Signature") if target.node is not None else ()
            )
        elif algorithm == BASE64:
            raw = octets if octets is not None else _string_value(target, excluded)
            try:
                octets = base64.b64decode(b"".join(raw.split()), validate=True)
            except binascii.Error:
                raise ReferenceError_("the base64 transform's input is not base64") from None
        else:
            try:
                method = C14N(algorithm)
            except ValueError:
                raise UnsupportedAlgorithm(f"unsupported transform {algorithm!r}") from None
            octets = _serialize(target, method, excluded)
    if octets is None:  # a node-set left at the end is canonicalized by C14N 1.0
        octets = _serialize(target, C14N.C14N10, excluded)
    return octets, tuple(names)


def _is_not_signature_xpath(transform: etree._Element) -> bool:
    """Whether the XPath is exactly ``not(ancestor-or-self::P:Signature)``, P bound to XML-DSig.

    This is the only XPath Rogatory evaluates; any prefix may name the
    XML-DSig namespace (``ds:``, ``dsig:``), as XPath prefixes are local.
    """
    xpath = transform.find(f"{{{DS}}}XPath")
    if xpath is None:
        return False
    match = _NOT_SIGNATURE.fullmatch((xpath.text or "").strip())
    return match is not None and xpath.nsmap.get(match.group(1)) == DS
