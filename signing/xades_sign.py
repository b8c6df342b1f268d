"""XAdES enveloped signing at levels B-B and B-T (ETSI EN 319 132-1).

The signature covers the whole document (``URI=""`` with the
enveloped-signature transform) and the signed properties: signing time,
the signing certificate (V2, SHA-256) and the data object format.
"""

from __future__ import annotations

import base64
import copy
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


_Slots = dict[str, etree._Element]


@dataclass(frozen=True)
class _Template:
    """One signer's signature with the values of each signature left empty.

    Each signature copies it (a C-level deep copy instead of some thirty
    SubElement calls) and fills in ``slots``, the elements that differ, found
    by their position in document order. SignedInfo and SignedProperties are
    each the root of a document of their own, so their copies are
    canonicalized as they stand (exclusive c14n prints the same namespaces
    wherever they are) before ``sign_tree`` moves them into place; it creates
    ds:Signature and xades:QualifyingProperties itself, so that their
    prefixes are declared as before, whatever the document declares.
    """

    signed_info: etree._Element  # ds:SignedInfo of its own; never changed, only copied
    signature: etree._Element  # ds:Signature holding SignatureValue, KeyInfo and Object, likewise
    signed_props: etree._Element  # xades:SignedProperties of its own, likewise
    slots: dict[str, int]  # position in the three trees' iter(), one after the other
    method: SignatureMethod

    def copy(self) -> tuple[etree._Element, list[etree._Element], etree._Element, _Slots]:
        """SignedInfo, the other children of ds:Signature, SignedProperties, and the slots."""
        signed_info = copy.deepcopy(self.signed_info)
        signature = copy.deepcopy(self.signature)
        signed_props = copy.deepcopy(self.signed_props)
        elements = [*signed_info.iter(), *signature.iter(), *signed_props.iter()]
        slot = {name: elements[at] for name, at in self.slots.items()}
        return signed_info, list(signature), signed_props, slot


@functools.lru_cache(maxsize=64)  # a gateway signs with one key and certificate, many times
def _template(signer: Signer) -> _Template:
    """The B-B signature of ``signer``: algorithms, KeyInfo and SigningCertificateV2 in place.

    Attributes that vary are created empty here, so that each keeps its place
    in the serialized signature when it is set.
    """
    ders = [c.public_bytes(Encoding.DER) for c in (signer.cert, *signer.chain)]
    sig_method = method_for(signer.key)
    c14n = C14N.EXC.value
    signed_info = etree.Element(f"{{{DS}}}SignedInfo", nsmap={"ds": DS})
    _el(signed_info, DS, "CanonicalizationMethod", Algorithm=c14n)
    _el(signed_info, DS, "SignatureMethod", Algorithm=sig_method.value)
    doc_ref = _el(signed_info, DS, "Reference", Id="", URI="")
    transforms = _el(doc_ref, DS, "Transforms")
    _el(transforms, DS, "Transform", Algorithm=ENVELOPED)
    _el(transforms, DS, "Transform", Algorithm=c14n)
    _el(doc_ref, DS, "DigestMethod", Algorithm=Digest.SHA256.value)
    doc_digest = _el(doc_ref, DS, "DigestValue")
    props_ref = _el(signed_info, DS, "Reference", Type=SIGNED_PROPERTIES_TYPE, URI="")
    _el(_el(props_ref, DS, "Transforms"), DS, "Transform", Algorithm=c14n)
    _el(props_ref, DS, "DigestMethod", Algorithm=Digest.SHA256.value)
    props_digest = _el(props_ref, DS, "DigestValue")

    signature = etree.Element(f"{{{DS}}}Signature", nsmap={"ds": DS})
    value = _el(signature, DS, "SignatureValue", Id="")
    x509_data = _el(_el(signature, DS, "KeyInfo"), DS, "X509Data")
    for der in ders:
        _el(x509_data, DS, "X509Certificate", _b64(der))
    obj = _el(signature, DS, "Object")

    signed_props = etree.Element(
        f"{{{XADES}}}SignedProperties", {"Id": ""}, nsmap={"xades": XADES, "ds": DS}
    )
    sig_props = _el(signed_props, XADES, "SignedSignatureProperties")
    signing_time = _el(sig_props, XADES, "SigningTime")
    cert_el = _el(_el(sig_props, XADES, "SigningCertificateV2"), XADES, "Cert")
    cert_digest = _el(cert_el, XADES, "CertDigest")
    _el(cert_digest, DS, "DigestMethod", Algorithm=Digest.SHA256.value)
    _el(cert_digest, DS, "DigestValue", _b64(digest(ders[0], Digest.SHA256)))
    _el(cert_el, XADES, "IssuerSerialV2", _issuer_serial_v2(ders[0]))
    data_props = _el(signed_props, XADES, "SignedDataObjectProperties")
    data_format = _el(data_props, XADES, "DataObjectFormat", ObjectReference="")
    _el(data_format, XADES, "MimeType", "text/xml")

    slots = {
        "doc_ref": doc_ref,
        "doc_digest": doc_digest,
        "props_ref": props_ref,
        "props_digest": props_digest,
        "value": value,
        "object": obj,
        "signing_time": signing_time,
        "data_format": data_format,
    }
    trees = [*signed_info.iter(), *signature.iter(), *signed_props.iter()]
    order = {element: at for at, element in enumerate(trees)}
    return _Template(
        signed_info,
        signature,
        signed_props,
        {name: order[e] for name, e in slots.items()},
        sig_method,
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
    if next(root.iterdescendants(f"{{{DS}}}Signature"), None) is not None:
        raise SigningError("the document is already signed; Rogatory signs a document once")
    template = _template(signer)
    method = C14N.EXC
    doc_digest = digest(canonicalize_document(root, method), Digest.SHA256)

    sig_id = "sig-" + secrets.token_hex(8)
    signed_info, signature_parts, signed_props, slot = template.copy()
    slot["doc_ref"].set("Id", f"{sig_id}-ref-doc")
    slot["doc_digest"].text = _b64(doc_digest)
    slot["props_ref"].set("URI", f"#{sig_id}-signedprops")
    value_el = slot["value"]
    value_el.set("Id", f"{sig_id}-value")
    signed_props.set("Id", f"{sig_id}-signedprops")
    when = (signing_time or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    slot["signing_time"].text = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    slot["data_format"].set("ObjectReference", f"#{sig_id}-ref-doc")
    slot["props_digest"].text = _b64(digest(canonicalize(signed_props, method), Digest.SHA256))
    signed_info_octets = canonicalize(signed_info, method)

    signature = etree.SubElement(root, f"{{{DS}}}Signature", {"Id": sig_id}, nsmap={"ds": DS})
    signature.append(signed_info)
    signature.extend(signature_parts)
    qualifying = etree.SubElement(
        slot["object"], f"{{{XADES}}}QualifyingProperties", {"Target": f"#{sig_id}"},
        nsmap={"xades": XADES},
    )  # fmt: skip
    qualifying.append(signed_props)
    if _BOUND_HERE & set(root.nsmap.values()):
        _check_in_place(signature, signed_info, signed_info_octets, signed_props, slot, method)
    value_el.text = _b64(sign_raw(signer.key, template.method, signed_info_octets))

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


_BOUND_HERE = {DS, XADES}


def _check_in_place(
    signature: etree._Element,
    signed_info: etree._Element,
    signed_info_octets: bytes,
    signed_props: etree._Element,
    slot: dict[str, etree._Element],
    method: C14N,
) -> None:
    """SigningError, and the tree as it was, unless what was signed reads the same in place.

    Where the document already binds the XML-DSig or XAdES namespace, lxml may
    write the moved SignedInfo or SignedProperties with the document's prefix for
    it (one URI under two prefixes), and their canonical octets change: the
    signature would never verify. Better no signature than that one.
    """
    props_digest = _b64(digest(canonicalize(signed_props, method), Digest.SHA256))
    if (
        canonicalize(signed_info, method) == signed_info_octets
        and props_digest == slot["props_digest"].text
    ):
        return
    root = signature.getparent()
    assert root is not None
    prefixes = sorted(
        f"{p or '(default)'}={uri}" for p, uri in root.nsmap.items() if uri in _BOUND_HERE
    )
    root.remove(signature)
    raise SigningError(
        f"cannot sign: the document binds the XML-DSig or XAdES namespace itself "
        f"({', '.join(prefixes)}) in a way that changes how the signature reads in place, "
        "so it would never verify; declare each of them under one prefix only, or not at all"
    )


def canonicalize_document(root: etree._Element, method: C14N) -> bytes:
    """The canonical form of the whole document, as a same-document ``URI=""`` selects it."""
    return etree.tostring(
        root.getroottree(), method="c14n", exclusive=method.exclusive, with_comments=False
    )
