"""The gateway's signed documents (evidences, notices): written and read back the same way.

Each kind is XML in its own namespace, valid against its own XSD, with one
enveloped XAdES signature over the whole document, issued by a gateway
(``Issuer/GatewayId``). A ``DocumentKind`` says which; ``read_signed``
verifies a document of that kind and returns the root of what the signature
covers, never the tree as received; the element and time helpers write one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from lxml import etree

from gateway.xsd import schema_for
from signing.errors import InputError, XMLInputError
from signing.keys import Signer
from signing.timestamp import TimeStamper
from signing.trust import TrustEngine
from signing.verdict import SubIndication, Verdict
from signing.xades_sign import Level, sign_tree, sign_xml
from signing.xml_document import ENVELOPE_POLICY, VerifiedXml, verify_xml
from signing.xmlparse import parse_xml

__all__ = [
    "DocumentKind",
    "SignedDocumentError",
    "read_signed",
    "sign_document",
    "xml_time",
]


class SignedDocumentError(InputError):
    """A signed document refused, and why.

    ``verdict`` is set when its signature did not pass: nothing in it was
    verified. A verdict INDETERMINATE/TRY_LATER (revocation data unavailable)
    may pass later: ``try_later`` says so.
    """

    def __init__(self, message: str, *, verdict: Verdict | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict

    @property
    def try_later(self) -> bool:
        return self.verdict is not None and self.verdict.subindication is SubIndication.TRY_LATER


@dataclass(frozen=True)
class DocumentKind:
    """One kind of signed document: what it is called, its namespace, root, schema and error."""

    name: str  # "evidence", "notice": as a person reads it in a reason
    namespace: str
    root: str  # the root element's local name
    schema_path: Callable[[], Path]
    error: type[SignedDocumentError]

    def q(self, path: str) -> str:
        """``a/b`` as the qualified path ``{ns}a/{ns}b``."""
        return _qualified(self.namespace, path)

    def element(self, parent: Any, tag: str, text: str | None = None, **attrs: str) -> Any:
        element = etree.SubElement(parent, self.q(tag), attrs)
        element.text = text
        return element

    def text(self, parent: Any, path: str) -> str | None:
        value = parent.findtext(self.q(path))
        return None if value is None else str(value)

    def required(self, parent: Any, path: str) -> str:
        # The XSD made every required element present; this only narrows the type.
        value = self.text(parent, path)
        if value is None:
            raise self.error(f"the {self.name} has no {path}")
        return value

    def problems(self, root: Any) -> list[str]:
        """Each XSD error as ``/Evidence/Message/Digest: message``, or none."""
        schema: Any = schema_for(self.schema_path())  # lxml-stubs: the error log is iterable
        if schema.validate(root):
            return []
        return [self._problem(root, entry) for entry in schema.error_log]

    def serialized(self, root: Any) -> bytes:
        """The unsigned document (UTF-8); the kind's error unless it is valid against its XSD."""
        self._require_valid(root)
        return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))

    def signed(self, root: Any, signer: Signer, *, timestamper: TimeStamper | None) -> bytes:
        """The document built at ``root``, signed as ``sign_document`` signs: no round trip
        through text; the kind's error unless it is valid against its XSD."""
        self._require_valid(root)
        return sign_tree(root, signer, level=_level(timestamper), timestamper=timestamper)

    def _require_valid(self, root: Any) -> None:
        problems = self.problems(root)
        if problems:
            raise self.error(_listing(f"the {self.name} is not valid", problems))

    def _problem(self, root: Any, entry: Any) -> str:
        # "Element 'Country': [facet 'pattern'] ..." -> the path says which element.
        message = _SUBJECT.sub("", str(entry.message).replace(f"{{{self.namespace}}}", ""))
        try:
            found = root.getroottree().xpath(entry.path) if entry.path else []
        except etree.XPathError:
            found = []
        if len(found) != 1 or not isinstance(found[0], etree._Element):
            return f"(line {entry.line}): {message}"
        steps = [etree.QName(e).localname for e in (found[0], *found[0].iterancestors())]
        return "/" + "/".join(reversed(steps)) + f": {message}"


_SUBJECT = re.compile(r"^Element '[^']*': ")


@functools.cache  # a few dozen paths, written for every evidence and notice
def _qualified(namespace: str, path: str) -> str:
    return "/".join(f"{{{namespace}}}{step}" for step in path.split("/"))


def _listing(what: str, problems: Sequence[str]) -> str:
    count = len(problems)
    return f"{what} ({count} problem{'s' * (count != 1)}): " + "; ".join(problems)


def xml_time(value: datetime) -> str:
    """An xs:dateTime, with ``Z`` for UTC."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def sign_document(xml: bytes, signer: Signer, *, timestamper: TimeStamper | None) -> bytes:
    """The document with the gateway's XAdES signature: B-B, or B-T with a TSA."""
    return sign_xml(xml, signer, level=_level(timestamper), timestamper=timestamper)


def _level(timestamper: TimeStamper | None) -> Level:
    return Level.B_B if timestamper is None else Level.B_T


def read_signed(
    data: bytes,
    engine: TrustEngine,
    kind: DocumentKind,
    *,
    expect_issuer: str | None = None,
    at: datetime | None = None,
) -> tuple[Any, VerifiedXml]:
    """Verify a signed document of ``kind``; the root of its signed octets, and the verification.

    The kind's error unless the signature is TOTAL-PASSED under the envelope
    policy (one signature, over the whole document), the signed document is
    valid against the kind's XSD, and (if given) ``expect_issuer`` issued it.
    """
    verified = verify_xml(data, engine, at=at, policy=ENVELOPE_POLICY)
    verdict = verified.report.verdict
    if not verdict.ok:
        sub = f"/{verdict.subindication.value}" if verdict.subindication else ""
        raise kind.error(
            f"the {kind.name}'s signature is not valid ({verdict.indication.value}{sub}): "
            f"{verdict.reason}",
            verdict=verdict,
        )
    if verified.signed_document is None:  # ENVELOPE_POLICY passed, so never; kept as a guard
        raise kind.error(f"the {kind.name}'s signature does not cover the whole document")
    try:
        root = parse_xml(verified.signed_document)
    except XMLInputError as exc:
        raise kind.error(f"the signed {kind.name} cannot be read: {exc}") from None
    expected = f"{{{kind.namespace}}}{kind.root}"
    if root.tag != expected:
        raise kind.error(
            f"the document is not a Rogatory {kind.name}: its root is {root.tag}, not {expected}"
        )
    problems = kind.problems(root)
    if problems:
        raise kind.error(_listing(f"the signed {kind.name} is not valid", problems))
    issuer = kind.required(root, "Issuer/GatewayId")
    if expect_issuer is not None and issuer != expect_issuer:
        raise kind.error(f"the {kind.name} was issued by {issuer!r}, not by {expect_issuer!r}")
    return root, verified
