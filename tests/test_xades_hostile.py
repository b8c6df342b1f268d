"""Regression tests for the hostile-input review: every finding ends in a verdict, never a raise.

Each test feeds one attack, as a user would meet it, to ``verify_envelope`` (or
``verify_document``) and pins the verdict the fixed verifier gives.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from asn1crypto import cms
from asn1crypto import x509 as ax
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from lxml import etree

from gateway.verification import verify_document, verify_envelope
from signing.keys import Signer
from signing.trust import TrustEngine
from signing.verdict import DocumentReport, Indication, SubIndication
from signing.xades_sign import sign_xml
from signing.xml_document import ENVELOPE_POLICY, verify_xml
from signing.xmldsig import DS, XADES
from signing.xmlparse import parse_xml

ENV_NS = "urn:rogatory:envelope:1"
Q = {"ds": DS, "xades": XADES}


def _edit(data: bytes, change: Callable[[etree._Element], object]) -> bytes:
    """The document after ``change`` was applied to its tree (what a keyless attacker can do)."""
    root = etree.fromstring(data)
    change(root)
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def _signature(root: etree._Element) -> etree._Element:
    return root.find("ds:Signature", Q)


def _forged_body() -> etree._Element:
    body = etree.Element(f"{{{ENV_NS}}}Body")
    body.text = "FORGED: transfer everything"
    return body


def _assert_failed(report: DocumentReport, sub: SubIndication, *fragments: str) -> None:
    verdict = report.verdict
    assert verdict.indication is Indication.TOTAL_FAILED, verdict
    assert verdict.subindication is sub, verdict
    for fragment in fragments:
        assert fragment in verdict.reason, verdict


def _tlv(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 128:
        return bytes([tag, size]) + body
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + body


def _with_unknown_key_algorithm(cert: x509.Certificate) -> x509.Certificate:
    """The certificate with its public key re-labelled as algorithm 1.2.3.4.5.6.7."""
    parsed = ax.Certificate.load(cert.public_bytes(Encoding.DER))
    oid = bytes([0x06, 0x06, 0x2A, 0x03, 0x04, 0x05, 0x06, 0x07])
    spki = _tlv(0x30, _tlv(0x30, oid) + _tlv(0x03, b"\x00" + b"\x01" * 32))
    tbs = parsed["tbs_certificate"].copy()
    tbs["subject_public_key_info"] = ax.PublicKeyInfo.load(spki)
    forged = ax.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature_value": parsed["signature_value"],
        }
    )
    return x509.load_der_x509_certificate(forged.dump())


def _self_signed_with_bad_subject() -> Signer:
    """A signer whose certificate's subject CN is a UTF8String of invalid UTF-8."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AAAAAAAA")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")]))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(Encoding.DER)
    bad = der.replace(b"\x0c\x08AAAAAAAA", b"\x0c\x08\xff\xfe\xff\xfeAAAA")
    assert bad != der
    return Signer(key, x509.load_der_x509_certificate(bad), ())


def test_timestamp_token_without_content_is_an_invalid_timestamp(
    signed_envelope: bytes, engine: TrustEngine
) -> None:
    signed_data = cms.SignedData(
        {
            "version": "v3",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "tst_info"},
            "signer_infos": [],
        }
    )
    token = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()

    def add_timestamp(root: etree._Element) -> None:
        qp = root.find(".//xades:QualifyingProperties", Q)
        up = etree.SubElement(qp, f"{{{XADES}}}UnsignedProperties")
        usp = etree.SubElement(up, f"{{{XADES}}}UnsignedSignatureProperties")
        stamp = etree.SubElement(usp, f"{{{XADES}}}SignatureTimeStamp")
        encapsulated = etree.SubElement(stamp, f"{{{XADES}}}EncapsulatedTimeStamp")
        encapsulated.text = base64.b64encode(token).decode()

    report = verify_envelope(_edit(signed_envelope, add_timestamp), engine)
    _assert_failed(
        report,
        SubIndication.HASH_FAILURE,
        "signature time-stamp is invalid",
        "not a well-formed RFC 3161 token",
    )


def test_thousands_of_references_are_refused_by_count(
    signed_envelope: bytes, engine: TrustEngine
) -> None:
    reference = (
        b'<ds:Reference URI=""><ds:Transforms><ds:Transform Algorithm="'
        b'http://www.w3.org/2000/09/xmldsig#enveloped-signature"/></ds:Transforms>'
        b'<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
        b"<ds:DigestValue>AAAA</ds:DigestValue></ds:Reference>"
    )
    data = signed_envelope.replace(b"</ds:SignedInfo>", reference * 2000 + b"</ds:SignedInfo>", 1)
    assert data != signed_envelope

    report = verify_envelope(data, engine)
    _assert_failed(report, SubIndication.FORMAT_FAILURE, "has 2002 references")


def test_signing_certificate_with_unknown_key_algorithm(
    envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    weird = _with_unknown_key_algorithm(es_signer.cert)
    data = sign_xml(envelope, Signer(es_signer.key, weird, ()))

    report = verify_envelope(data, engine)
    _assert_failed(report, SubIndication.FORMAT_FAILURE, "public key cannot be used")


def test_doctype_in_processing_instruction_moved_forward_by_c14n(
    envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    hostile = envelope.replace(
        b"<Envelope", b"<!--" + b"x" * 5000 + b"--><?x <!DOCTYPE ?>\n<Envelope", 1
    )
    assert hostile != envelope

    report = verify_envelope(sign_xml(hostile, es_signer), engine)
    _assert_failed(report, SubIndication.FORMAT_FAILURE, "signed envelope cannot be read", "DTD")


def test_canonical_form_above_the_size_limit(
    envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    count = 3_000_000  # 3 MB of '"' becomes 18 MB of '&quot;', above the 16 MiB limit
    hostile = envelope.replace(
        b'envelope:1" version="1.0"',
        b'envelope:1" version="1.0" junk=\'' + b'"' * count + b"'",
        1,
    )
    assert hostile != envelope
    signed = sign_xml(hostile, es_signer)
    # Same infoset, spelled compactly: the signature stays valid, the input stays small.
    data = signed.replace(b'junk="' + b"&quot;" * count + b'"', b"junk='" + b'"' * count + b"'", 1)
    assert len(data) < 4_000_000

    report = verify_envelope(data, engine)
    _assert_failed(
        report, SubIndication.FORMAT_FAILURE, "signed envelope cannot be read", "above the limit"
    )


def test_signer_certificate_with_invalid_utf8_subject(envelope: bytes, engine: TrustEngine) -> None:
    data = sign_xml(envelope, _self_signed_with_bad_subject())

    report = verify_envelope(data, engine)
    assert report.verdict.indication is not Indication.TOTAL_PASSED
    assert "certificate" in report.verdict.reason


def _second_key_info(root: etree._Element) -> None:
    key_info = etree.Element(f"{{{DS}}}KeyInfo")
    key_info.append(_forged_body())
    _signature(root).insert(3, key_info)


def _in_unsigned_properties(root: etree._Element) -> None:
    qp = root.find(".//xades:QualifyingProperties", Q)
    etree.SubElement(qp, f"{{{XADES}}}UnsignedProperties").append(_forged_body())


SMUGGLING = {
    "KeyInfo": lambda r: _signature(r).find("ds:KeyInfo", Q).append(_forged_body()),
    "X509Data": lambda r: _signature(r).find("ds:KeyInfo/ds:X509Data", Q).append(_forged_body()),
    "SignatureValue": lambda r: _signature(r).find("ds:SignatureValue", Q).append(_forged_body()),
    "second KeyInfo": _second_key_info,
    "UnsignedProperties": _in_unsigned_properties,
    "attribute on Signature": lambda r: _signature(r).set("Note", "FORGED"),
}


@pytest.mark.parametrize("where", list(SMUGGLING))
def test_forged_content_smuggled_into_the_signature(
    where: str, signed_envelope: bytes, engine: TrustEngine
) -> None:
    data = _edit(signed_envelope, SMUGGLING[where])
    assert data != signed_envelope

    report = verify_envelope(data, engine)
    _assert_failed(report, SubIndication.FORMAT_FAILURE, "envelope signature")


def test_comment_in_signing_time_does_not_change_the_reported_time(
    signed_envelope: bytes, engine: TrustEngine
) -> None:
    pattern = rb"<xades:SigningTime>(\d{4}-\d\d-\d\d)(T[^<]*)</xades:SigningTime>"
    match = re.search(pattern, signed_envelope)
    assert match is not None
    signed_time = datetime.fromisoformat((match[1] + match[2]).decode())
    data = re.sub(pattern, rb"<xades:SigningTime>\1<!---->\2</xades:SigningTime>", signed_envelope)
    assert data != signed_envelope

    report = verify_envelope(data, engine)
    assert report.verdict.indication is Indication.TOTAL_PASSED, report.verdict
    reported = report.signatures[0].signing_time
    assert reported is not None
    assert reported.tzinfo is not None
    assert reported == signed_time


def test_schema_error_next_to_processing_instruction(
    envelope: bytes, es_signer: Signer, engine: TrustEngine
) -> None:
    hostile = envelope.replace(
        b"<Language>es</Language>",
        b'<Language>es</Language>\n<?pi x?><p:Bad xmlns:p="urn:a"/>',
        1,
    ).replace(b"</Body>", b'<p:Other xmlns:p="urn:b"/></Body>', 1)
    assert hostile.count(b"xmlns:p=") == 2

    report = verify_envelope(sign_xml(hostile, es_signer), engine)
    _assert_failed(
        report,
        SubIndication.FORMAT_FAILURE,
        "signed envelope breaks",
        "/Envelope/Header/p:Bad",
        "/Envelope/Body/p:Other",
    )


def test_pdf_marker_in_a_comment_does_not_make_an_envelope_a_pdf(
    signed_envelope: bytes, engine: TrustEngine
) -> None:
    data = signed_envelope.replace(b"?>", b"?><!--%PDF-1.7-->", 1)
    assert b"%PDF-" in data[:1024]

    report = verify_document(data, engine)
    assert report.kind == "xml"
    assert report.verdict.indication is Indication.TOTAL_PASSED, report.verdict


def test_comment_splitting_text_leaves_the_signed_document_whole(
    signed_envelope: bytes, engine: TrustEngine
) -> None:
    data = signed_envelope.replace(b"<Article>18</Article>", b"<Article>1<!---->8</Article>", 1)
    assert data != signed_envelope

    verified = verify_xml(data, engine, policy=ENVELOPE_POLICY)
    assert verified.report.verdict.indication is Indication.TOTAL_PASSED, verified.report.verdict
    assert verified.signed_document is not None
    # The raw tree stops at the comment: the second article reads "1", which was never signed.
    raw = etree.fromstring(data).findall(f".//{{{ENV_NS}}}Article")
    assert [a.text for a in raw] == ["1", "1"]
    signed = parse_xml(verified.signed_document).findall(f".//{{{ENV_NS}}}Article")
    assert [a.text for a in signed] == ["1", "18"]
    assert all(len(a) == 0 for a in signed)


def test_an_oversized_key_info_certificate_is_judged_but_not_kept(
    envelope: bytes, engine: TrustEngine
) -> None:
    """Parsed certificates and their digests are kept for speed, but only of a real size."""
    from signing.xades_parts import _parse_kept
    from signing.xades_sign import Level

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "big")])
    now = datetime.now(UTC)
    big = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(8)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=10))
        .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"x" * 40_000),
                       critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    data = sign_xml(envelope, Signer(key, big, ()), level=Level.B_B)
    _parse_kept.cache_clear()
    report = verify_envelope(data, engine)
    # The chain was judged (a self-signed stranger), from a certificate kept nowhere.
    assert report.verdict.subindication is SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    assert _parse_kept.cache_info().currsize == 0
    assert big not in engine._fingerprints._known
