"""Reading the parts of one XML-DSig / XAdES signature element, judging none of them.

Required children, base64 values, the certificates and bare keys in
KeyInfo, and the signed properties; xades_verify decides what they mean.
Anything malformed is a ``FormatProblem`` saying what and where.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as CryptographyUnsupported
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key
from lxml import etree

from .verdict import SubIndication, Verdict
from .xmldsig import DS, DS11, XADES, Digest, UnsupportedAlgorithm, algorithm, digest

_Q = {"ds": DS, "xades": XADES, "dsig11": DS11}
_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "urn:oid:1.2.840.10045.3.1.7": ec.SECP256R1(),
    "urn:oid:1.3.132.0.34": ec.SECP384R1(),
    "urn:oid:1.3.132.0.35": ec.SECP521R1(),
}


class FormatProblem(Exception):
    """The signature is not well formed enough to be checked."""


@functools.cache
def _clark(tag: str) -> str:
    """``ds:Name`` as ``{namespace}Name``, for iterchildren (much cheaper than findall)."""
    prefix, name = tag.split(":")
    return f"{{{_Q[prefix]}}}{name}"


def one(parent: etree._Element, tag: str, what: str) -> etree._Element:
    """The one child ``tag`` (``ds:Name``) of ``parent``; FormatProblem if none or several."""
    found = list(parent.iterchildren(_clark(tag)))
    if len(found) != 1:
        raise FormatProblem(f"expected exactly one {what}, found {len(found)}")
    return found[0]


def b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise FormatProblem(f"{what} is not valid base64") from None


@dataclass(frozen=True, eq=False)
class EmbeddedCertificate:
    """One X509Certificate of KeyInfo (one object per place: a certificate given twice is two)."""

    cert: x509.Certificate
    der: bytes  # as cryptography writes the certificate: what a CertDigest is computed over


def _parse(encoded: bytes) -> tuple[x509.Certificate, bytes]:
    cert = x509.load_der_x509_certificate(encoded)
    return cert, cert.public_bytes(Encoding.DER)


# A gateway sees the certificates of a few signers again and again: each is
# parsed, and written back as DER, once (certificates are immutable). Only
# certificates of a real size are kept, so that what is kept stays small.
_parse_kept = functools.lru_cache(maxsize=256)(_parse)
_KEPT_BYTES = 16 * 1024


def _parsed(encoded: bytes) -> tuple[x509.Certificate, bytes]:
    return _parse_kept(encoded) if len(encoded) <= _KEPT_BYTES else _parse(encoded)


def certificates(signature: etree._Element) -> list[EmbeddedCertificate]:
    certs = []
    for node in signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _Q):
        try:
            certs.append(EmbeddedCertificate(*_parsed(b64(node.text, "an X509Certificate"))))
        except ValueError:
            raise FormatProblem("an X509Certificate in KeyInfo cannot be parsed") from None
    return certs


def _int(parent: etree._Element, name: str) -> int:
    return int.from_bytes(b64(one(parent, f"ds:{name}", name).text, name))


def key_values(signature: etree._Element) -> list[object]:
    """Bare public keys in KeyInfo (KeyValue, DEREncodedKeyValue); RetrievalMethod is not followed.

    A bare key lets the signature value be checked, never the signer identified.
    """
    keys: list[object] = []
    try:
        for node in signature.findall("ds:KeyInfo/ds:KeyValue/ds:RSAKeyValue", _Q):
            keys.append(
                rsa.RSAPublicNumbers(_int(node, "Exponent"), _int(node, "Modulus")).public_key()
            )
        for node in signature.findall("ds:KeyInfo/ds:KeyValue/ds:DSAKeyValue", _Q):
            params = dsa.DSAParameterNumbers(_int(node, "P"), _int(node, "Q"), _int(node, "G"))
            keys.append(dsa.DSAPublicNumbers(_int(node, "Y"), params).public_key())
        for node in signature.findall("ds:KeyInfo/ds:KeyValue/dsig11:ECKeyValue", _Q):
            named = node.find("dsig11:NamedCurve", _Q)
            uri = named.get("URI") if named is not None else None
            if uri is None or uri not in _EC_CURVES:
                raise UnsupportedAlgorithm(f"unsupported ECKeyValue curve {uri!r}")
            point = b64(node.findtext("dsig11:PublicKey", None, _Q), "ECKeyValue PublicKey")
            keys.append(ec.EllipticCurvePublicKey.from_encoded_point(_EC_CURVES[uri], point))
        for node in signature.findall("ds:KeyInfo/dsig11:DEREncodedKeyValue", _Q):
            keys.append(load_der_public_key(b64(node.text, "DEREncodedKeyValue")))
    except ValueError as exc:
        raise FormatProblem(f"a public key in KeyInfo cannot be read: {exc}") from None
    return keys


def signed_properties(signature: etree._Element) -> etree._Element | None:
    found = signature.findall("ds:Object/xades:QualifyingProperties/xades:SignedProperties", _Q)
    if len(found) > 1:
        raise FormatProblem("more than one SignedProperties in the signature")
    return found[0] if found else None


def signing_cert_from_property(
    props: etree._Element, certs: list[EmbeddedCertificate]
) -> tuple[EmbeddedCertificate | None, Verdict | None, bool]:
    """The certificate the signed property names, a verdict if it fails, and weak-digest flag."""
    cert_refs = props.findall(
        "xades:SignedSignatureProperties/xades:SigningCertificateV2/xades:Cert", _Q
    ) + props.findall("xades:SignedSignatureProperties/xades:SigningCertificate/xades:Cert", _Q)
    if not cert_refs:
        return (
            None,
            Verdict.indeterminate(
                SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
                "the signed properties do not identify the signing certificate",
            ),
            False,
        )
    ref = cert_refs[0]
    method = algorithm(
        Digest,
        ref.find("xades:CertDigest/ds:DigestMethod", _Q).get("Algorithm")  # type: ignore[union-attr]
        if ref.find("xades:CertDigest/ds:DigestMethod", _Q) is not None
        else None,
        "certificate digest",
    )
    expected = b64(ref.findtext("xades:CertDigest/ds:DigestValue", None, _Q), "CertDigest")
    for cert in certs:
        if digest(cert.der, method) == expected:
            return cert, None, method.weak
    return (
        None,
        Verdict.indeterminate(
            SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
            "no certificate in KeyInfo matches the signed SigningCertificate digest",
        ),
        method.weak,
    )


def countersigned_value(signature: etree._Element) -> etree._Element | None:
    """The SignatureValue a counter-signature must sign, or None for a top-level signature."""
    parent = signature.getparent()
    if parent is None or parent.tag != f"{{{XADES}}}CounterSignature":
        return None
    enclosing = next(parent.iterancestors(f"{{{DS}}}Signature"), None)
    if enclosing is None:
        raise FormatProblem("a CounterSignature that is not inside any signature")
    return one(enclosing, "ds:SignatureValue", "SignatureValue in the countersigned signature")


def claimed_signing_time(props: etree._Element | None) -> tuple[datetime | None, str | None]:
    if props is None:
        return None, None
    text = props.findtext("xades:SignedSignatureProperties/xades:SigningTime", None, _Q)
    if not text:
        return None, None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FormatProblem(f"SigningTime {text!r} is not a date and time") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), "claimed"


def public_key(cert: x509.Certificate) -> object:
    try:
        return cert.public_key()
    except (ValueError, CryptographyUnsupported) as exc:
        raise FormatProblem(f"the certificate's public key cannot be used: {exc}") from None
