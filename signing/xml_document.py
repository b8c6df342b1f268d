"""Verification of a whole XML document: every signature in it, and a policy.

The Rogatory envelope policy (``ENVELOPE_POLICY``) is strict: exactly one
signature, a child of the root, whose references are the whole document
(enveloped-signature and canonicalization only) and its own signed
properties. What it hands back is the canonical signed document, which is
the only thing callers may read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from lxml import etree

from .errors import XMLInputError
from .trust import TrustEngine
from .verdict import DocumentReport, SubIndication, Verdict
from .xades_verify import Checked, SignedReference, verify_signature
from .xmldsig import C14N, DS, ENVELOPED, SIGNED_PROPERTIES_TYPE, XADES, XADES141
from .xmlparse import ParsedXml, parse_xml

_C14N_URIS = {m.value for m in C14N}


@dataclass(frozen=True)
class XmlPolicy:
    """What a document must look like beyond each signature being valid."""

    require_whole_document: bool = False
    name: str = "any XML-DSig/XAdES document"


GENERAL_POLICY = XmlPolicy()
ENVELOPE_POLICY = XmlPolicy(require_whole_document=True, name="Rogatory envelope")


@dataclass(frozen=True)
class VerifiedXml:
    report: DocumentReport
    # Canonical octets of the whole signed document (signature removed), when
    # a valid-or-not signature covers the whole document; None otherwise.
    signed_document: bytes | None
    # The certificate of the one signature, when there is exactly one and it was found.
    signing_cert: x509.Certificate | None = None


def _whole_document_octets(checked: Checked) -> bytes | None:
    for ref in checked.references:
        if ref.whole_document and ref.type != SIGNED_PROPERTIES_TYPE:
            return ref.octets
    return None


def _envelope_shape(root: etree._Element, signatures: list[etree._Element]) -> Verdict | None:
    """Why the signatures do not have the envelope shape, or None."""
    if len(signatures) != 1:
        return Verdict.failed(
            SubIndication.FORMAT_FAILURE,
            f"an envelope carries exactly one signature, this one has {len(signatures)}",
        )
    if signatures[0].getparent() is not root:
        return Verdict.failed(
            SubIndication.FORMAT_FAILURE, "the envelope's signature is not a child of its root"
        )
    return None


_SIGNATURE_PARTS = {
    f"{{{DS}}}{name}" for name in ("SignedInfo", "SignatureValue", "KeyInfo", "Object")
}
# As tag prefixes: "{namespace}" starts the tag of an element in that namespace.
_XADES_NAMESPACES = tuple(f"{{{ns}}}" for ns in (DS, XADES, XADES141))
# Where an envelope signature may hold child elements, and which.
_ALLOWED_CHILDREN = {
    f"{{{DS}}}Signature": _SIGNATURE_PARTS,
    f"{{{DS}}}KeyInfo": {f"{{{DS}}}X509Data"},
    f"{{{DS}}}X509Data": {f"{{{DS}}}X509Certificate"},
    f"{{{DS}}}Object": {f"{{{XADES}}}QualifyingProperties"},
    f"{{{DS}}}SignatureValue": set(),
    f"{{{DS}}}X509Certificate": set(),
}
# Bounds the work on a document from outside, whatever its policy.
MAX_SIGNATURES = 16


def _foreign_content(signature: etree._Element) -> Verdict | None:
    """Why an envelope signature holds more than XAdES needs (room to smuggle), or None."""

    def refuse(why: str) -> Verdict:
        return Verdict.failed(SubIndication.FORMAT_FAILURE, f"the envelope signature {why}")

    if set(signature.attrib) - {"Id"}:
        return refuse("carries attributes other than Id")
    declared = signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    if len(declared) != 2:
        return refuse(
            f"has {len(declared)} references; it has one to the whole document and one to "
            "its signed properties"
        )
    for element in signature.iter():
        tag = element.tag
        if not isinstance(tag, str):
            continue
        if not tag.startswith(_XADES_NAMESPACES):
            return refuse(f"holds an element {tag} outside XML-DSig and XAdES")
        allowed = _ALLOWED_CHILDREN.get(tag)
        if allowed is None:
            continue
        children = [c.tag for c in element if isinstance(c.tag, str)]
        unexpected = [t for t in children if t not in allowed]
        if unexpected:
            return refuse(f"holds {unexpected[0]} inside {element.tag}")
        if element is signature and len(children) != len(set(children)):
            return refuse("repeats one of SignedInfo, SignatureValue, KeyInfo or Object")
    return None


def _covers_whole(references: list[SignedReference], signature: etree._Element) -> Verdict | None:
    content = [r for r in references if r.type != SIGNED_PROPERTIES_TYPE]
    props = [r for r in references if r.type == SIGNED_PROPERTIES_TYPE]
    declared = signature.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    if len(declared) != 2 or len(content) != 1 or len(props) != 1:
        return Verdict.failed(
            SubIndication.FORMAT_FAILURE,
            "an envelope signature has one reference to the whole document and one to its "
            "signed properties",
        )
    ref = content[0]
    extra = [t for t in ref.transforms if t != ENVELOPED and t not in _C14N_URIS]
    if ref.uri != "" or not ref.enveloped or extra:
        return Verdict.failed(
            SubIndication.FORMAT_FAILURE,
            "the signature does not cover the whole envelope"
            + (f" (transforms {extra} select part of it)" if extra else f" (URI={ref.uri!r})"),
        )
    return None


def verify_xml(
    data: bytes | ParsedXml,
    engine: TrustEngine | None,
    *,
    path: str = "-",
    at: datetime | None = None,
    policy: XmlPolicy = GENERAL_POLICY,
) -> VerifiedXml:
    """Verify every signature of an XML document under ``policy``.

    ``data`` is the bytes as received, or ``parse_document``'s reading of
    them when the caller has parsed them already (the tree is not modified).
    """
    try:
        root = data.root if isinstance(data, ParsedXml) else parse_xml(data)
    except XMLInputError as exc:
        failure = Verdict.failed(SubIndication.FORMAT_FAILURE, str(exc))
        return VerifiedXml(
            DocumentReport.from_signatures(path, "xml", [], document_failure=failure), None
        )
    signatures = list(root.iter(f"{{{DS}}}Signature"))
    if not signatures:
        failure = Verdict.failed(SubIndication.FORMAT_FAILURE, "the document is not signed")
        return VerifiedXml(
            DocumentReport.from_signatures(path, "xml", [], document_failure=failure), None
        )

    if len(signatures) > MAX_SIGNATURES:
        failure = Verdict.failed(
            SubIndication.FORMAT_FAILURE,
            f"the document has {len(signatures)} signatures, more than the {MAX_SIGNATURES} "
            "Rogatory verifies",
        )
        return VerifiedXml(
            DocumentReport.from_signatures(path, "xml", [], document_failure=failure), None
        )
    if policy.require_whole_document:
        # The shape is checked before any digest is computed: a malformed
        # envelope costs no canonicalization.
        shape = _envelope_shape(root, signatures) or _foreign_content(signatures[0])
        if shape is not None:
            return VerifiedXml(
                DocumentReport.from_signatures(path, "xml", [], document_failure=shape), None
            )
    checked = [verify_signature(sig, root, engine, at=at) for sig in signatures]
    document_failure = None
    # A signature that could not be processed at all fails with its own reason.
    if policy.require_whole_document and checked[0].references:
        document_failure = _covers_whole(checked[0].references, signatures[0])
        if checked[0].report.level is None and document_failure is None:
            document_failure = Verdict.failed(
                SubIndication.FORMAT_FAILURE,
                "an envelope signature must be XAdES (signed properties missing)",
            )
    report = DocumentReport.from_signatures(
        path, "xml", [c.report for c in checked], document_failure=document_failure
    )
    if len(checked) != 1:
        return VerifiedXml(report, None)
    return VerifiedXml(report, _whole_document_octets(checked[0]), checked[0].signing_cert)
