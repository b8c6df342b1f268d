"""XAdES enveloped signing at levels B-B and B-T (ETSI EN 319 132-1).

The signature covers the whole document (``URI=""`` with the
enveloped-signature transform) and the signed properties: signing time,
the signing certificate (V2, SHA-256) and the data object format.
"""

from __future__ import annotations

import base64
import functools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from .errors import SigningError, XMLInputError
from .keys import Signer
from .timestamp import TimeStamper
from .xmldsig import (
    C14N,
    DS,
    ENVELOPED,
    SIGNED_PROPERTIES_TYPE,
    XADES,
    Digest,
    SignatureMethod,
    canonicalize,
    digest,
    method_for,
    sign_raw,
)
from .xmlparse import parse_xml


class Level(StrEnum):
    B_B = "B-B"
    B_T = "B-T"


def _el(
    parent: etree._Element, ns: str, tag: str, text: str | None = None, **attrs: str
) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ns}}}{tag}", attrs)
    if text is not None:
        element.text = text
    return element


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class _SignerParts:
    """What every signature by one signer repeats, worked out once."""

    method: SignatureMethod
    certificates: tuple[str, ...]  # base64 DER for KeyInfo, the signer's first
    cert_digest: str  # base64 SHA-256 of the signer's DER, for SigningCertificateV2
    issuer_serial: str  # base64 IssuerSerialV2


@functools.lru_cache(maxsize=64)  # a gateway signs with one key and certificate, many times
def _signer_parts(signer: Signer) -> _SignerParts:
    ders = [c.public_bytes(Encoding.DER) for c in (signer.cert, *signer.chain)]
    return _SignerParts(
        method=method_for(signer.key),
        certificates=tuple(_b64(der) for der in ders),
        cert_digest=_b64(digest(ders[0], Digest.SHA256)),
        issuer_serial=_issuer_serial_v2(ders[0]),
    )


def _issuer_serial_v2(der: bytes) -> str:
    """RFC 5035 IssuerSerial (GeneralNames + serial), as XAdES V2 carries it."""
    asn1 = asn1_x509.Certificate.load(der)
    general_names = asn1_x509.GeneralNames([asn1_x509.GeneralName("directory_name", asn1.issuer)])
    issuer_serial = tsp.IssuerSerial({"issuer": general_names, "serial_number": asn1.serial_number})
    return _b64(issuer_serial.dump())


def _check_level(level: Level, timestamper: TimeStamper | None) -> None:
    if level is Level.B_T and timestamper is None:
        raise SigningError("level B-T needs a time-stamping authority (--tsa URL)")


def sign_xml(
    data: bytes,
    signer: Signer,
    *,
    level: Level = Level.B_B,
    timestamper: TimeStamper | None = None,
    signing_time: datetime | None = None,
) -> bytes:
    """Return ``data`` with an enveloped XAdES signature over the whole document."""
    _check_level(level, timestamper)
    try:
        root = parse_xml(data)
    except XMLInputError as exc:
        raise SigningError(f"cannot sign: {exc}") from None
    return sign_tree(root, signer, level=level, timestamper=timestamper, signing_time=signing_time)


def sign_tree(
    root: etree._Element,
    signer: Signer,
    *,
    level: Level = Level.B_B,
    timestamper: TimeStamper | None = None,
    signing_time: datetime | None = None,
) -> bytes:
    """Sign the document whose root is ``root`` (changing the tree) and return its bytes.

    For a document Rogatory builds itself: it is signed as it stands, with no
    round trip through text; ``sign_xml`` is the same for bytes.
    """
    _check_level(level, timestamper)
    if root.getparent() is not None:
        raise SigningError("cannot sign: the element is not the root of its document")
    if root.find(f".//{{{DS}}}Signature") is not None:
        raise SigningError("the document is already signed; Rogatory signs a document once")
    parts = _signer_parts(signer)
    method = C14N.EXC
    doc_digest = digest(canonicalize_document(root, method), Digest.SHA256)

    sig_id = "sig-" + secrets.token_hex(8)
    signature = etree.SubElement(root, f"{{{DS}}}Signature", {"Id": sig_id}, nsmap={"ds": DS})
    signed_info = _el(signature, DS, "SignedInfo")
    _el(signed_info, DS, "CanonicalizationMethod", Algorithm=method.value)
    _el(signed_info, DS, "SignatureMethod", Algorithm=parts.method.value)
    doc_ref = _el(signed_info, DS, "Reference", Id=f"{sig_id}-ref-doc", URI="")
    transforms = _el(doc_ref, DS, "Transforms")
    _el(transforms, DS, "Transform", Algorithm=ENVELOPED)
    _el(transforms, DS, "Transform", Algorithm=method.value)
    _el(doc_ref, DS, "DigestMethod", Algorithm=Digest.SHA256.value)
    _el(doc_ref, DS, "DigestValue", _b64(doc_digest))
    props_ref = _el(
        signed_info, DS, "Reference", Type=SIGNED_PROPERTIES_TYPE, URI=f"#{sig_id}-signedprops"
    )
    _el(_el(props_ref, DS, "Transforms"), DS, "Transform", Algorithm=method.value)
    _el(props_ref, DS, "DigestMethod", Algorithm=Digest.SHA256.value)
    props_digest_el = _el(props_ref, DS, "DigestValue")
    value_el = _el(signature, DS, "SignatureValue", Id=f"{sig_id}-value")
    x509_data = _el(_el(signature, DS, "KeyInfo"), DS, "X509Data")
    for certificate in parts.certificates:
        _el(x509_data, DS, "X509Certificate", certificate)

    obj = _el(signature, DS, "Object")
    qualifying = etree.SubElement(
        obj, f"{{{XADES}}}QualifyingProperties", {"Target": f"#{sig_id}"}, nsmap={"xades": XADES}
    )
    signed_props = _el(qualifying, XADES, "SignedProperties", Id=f"{sig_id}-signedprops")
    sig_props = _el(signed_props, XADES, "SignedSignatureProperties")
    when = (signing_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    _el(sig_props, XADES, "SigningTime", when.strftime("%Y-%m-%dT%H:%M:%SZ"))
    cert_el = _el(_el(sig_props, XADES, "SigningCertificateV2"), XADES, "Cert")
    cert_digest = _el(cert_el, XADES, "CertDigest")
    _el(cert_digest, DS, "DigestMethod", Algorithm=Digest.SHA256.value)
    _el(cert_digest, DS, "DigestValue", parts.cert_digest)
    _el(cert_el, XADES, "IssuerSerialV2", parts.issuer_serial)
    data_props = _el(signed_props, XADES, "SignedDataObjectProperties")
    fmt = _el(data_props, XADES, "DataObjectFormat", ObjectReference=f"#{sig_id}-ref-doc")
    _el(fmt, XADES, "MimeType", "text/xml")

    props_digest_el.text = _b64(digest(canonicalize(signed_props, method), Digest.SHA256))
    value_el.text = _b64(sign_raw(signer.key, parts.method, canonicalize(signed_info, method)))

    if level is Level.B_T:
        assert timestamper is not None
        token = timestamper.timestamp(canonicalize(value_el, method))
        unsigned = _el(
            _el(qualifying, XADES, "UnsignedProperties"), XADES, "UnsignedSignatureProperties"
        )
        stamp = _el(unsigned, XADES, "SignatureTimeStamp", Id=f"{sig_id}-ts")
        _el(stamp, DS, "CanonicalizationMethod", Algorithm=method.value)
        _el(stamp, XADES, "EncapsulatedTimeStamp", _b64(token))
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def canonicalize_document(root: etree._Element, method: C14N) -> bytes:
    """The canonical form of the whole document, as a same-document ``URI=""`` selects it."""
    return etree.tostring(
        root.getroottree(), method="c14n", exclusive=method.exclusive, with_comments=False
    )
