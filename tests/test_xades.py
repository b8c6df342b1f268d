"""XAdES signing and verification of envelopes, and every bad input the issue names."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway.pki import DevPKI, create_dev_pki
from gateway.verification import verify_envelope
from signing.errors import SigningError
from signing.keys import Signer
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from signing.verdict import Indication, SubIndication
from signing.xades_sign import sign_xml
from signing.xml_document import ENVELOPE_POLICY, verify_xml
from signing.xmldsig import C14N, DS, XADES, Digest, canonicalize, digest, method_for, sign_raw
from signing.xmlparse import parse_document
from tests.conftest import signer_for, unreachable_crl_signer

NS = {"ds": DS, "xades": XADES, "e": "urn:rogatory:envelope:1"}


def check(data: bytes, engine: TrustEngine) -> tuple[Indication, SubIndication | None, str]:
    report = verify_envelope(data, engine)
    return report.verdict.indication, report.verdict.subindication, report.verdict.reason


def tree(data: bytes) -> etree._Element:
    return etree.fromstring(data)


def dump(root: etree._Element) -> bytes:
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def resign(root: etree._Element, signer: Signer) -> bytes:
    """Recompute the SignatureValue after a test changed SignedInfo (a forger with the key)."""
    signed_info = root.find(".//ds:SignedInfo", NS)
    value = sign_raw(signer.key, method_for(signer.key), canonicalize(signed_info, C14N.EXC))
    root.find(".//ds:SignatureValue", NS).text = base64.b64encode(value).decode()
    return dump(root)


def test_signed_envelope_passes_with_whole_document_coverage(signed_envelope, engine):
    report = verify_envelope(signed_envelope, engine)
    assert report.verdict.indication is Indication.TOTAL_PASSED, report.verdict.reason
    (sig,) = report.signatures
    assert "Ministerio de Justicia (ES-MJ)" in sig.signer
    assert sig.level == "XAdES-B-B" and sig.signing_time_source == "claimed"
    assert sig.details["covers"] == "the whole document"
    assert len(sig.chain) == 3


def test_verifier_hands_back_only_the_signed_document(signed_envelope, engine):
    root = tree(signed_envelope)
    # Content slipped into the signature's Object is outside what was signed.
    obj = root.find(".//ds:Object", NS)
    etree.SubElement(obj, "{urn:rogatory:envelope:1}Header").text = "forged"
    verified = verify_xml(dump(root), engine, policy=ENVELOPE_POLICY)
    assert verified.report.verdict.indication is Indication.TOTAL_FAILED
    assert "Object" in verified.report.verdict.reason
    clean = verify_xml(signed_envelope, engine, policy=ENVELOPE_POLICY)
    assert clean.signed_document is not None
    assert b"Signature" not in clean.signed_document and b"ES-MJ" in clean.signed_document


def test_a_shared_parse_gets_the_verdict_of_the_bytes_and_is_left_as_it_was(
    signed_envelope, engine
):
    """The intake parses once and hands the tree over: same verdict, same signed octets."""
    tampered = signed_envelope.replace(b"<Language>es</Language>", b"<Language>en</Language>")
    for data in (signed_envelope, tampered):
        received = parse_document(data)
        before = dump(received.root)
        shared = verify_xml(received, engine, policy=ENVELOPE_POLICY)
        alone = verify_xml(data, engine, policy=ENVELOPE_POLICY)
        assert shared.report.verdict == alone.report.verdict
        assert shared.signed_document == alone.signed_document
        assert dump(received.root) == before
    tampered_verdict = verify_xml(parse_document(tampered), engine, policy=ENVELOPE_POLICY)
    assert tampered_verdict.report.verdict.indication is Indication.TOTAL_FAILED


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<Language>es</Language>", b"<Language>en</Language>"),  # text
        (b'version="1.0"', b'version="1.1"'),  # attribute
        (b"<AuthorityId>AR-MJ</AuthorityId>", b"<AuthorityId>CO-FGN</AuthorityId>"),
    ],
    ids=["text", "attribute", "recipient"],
)
def test_tampered_content_is_a_hash_failure(signed_envelope, engine, old, new):
    assert old in signed_envelope
    indication, sub, reason = check(signed_envelope.replace(old, new, 1), engine)
    assert (indication, sub) == (Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE)
    assert "changed after signing" in reason


def test_tampered_attachment_digest_is_a_hash_failure(signed_envelope, engine):
    root = tree(signed_envelope)
    digest_el = root.find(".//e:Attachment/e:Digest", NS)
    assert digest_el is not None
    digest_el.text = "0" * 64
    assert check(dump(root), engine)[:2] == (Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE)


def test_tampered_signed_property_is_a_hash_failure(signed_envelope, engine):
    root = tree(signed_envelope)
    root.find(".//xades:SigningTime", NS).text = "2020-01-01T00:00:00Z"
    indication, sub, reason = check(dump(root), engine)
    assert (indication, sub) == (Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE)
    assert "signedprops" in reason


def test_second_signature_beside_the_signed_one_is_refused(signed_envelope, engine):
    root = tree(signed_envelope)
    root.append(etree.fromstring(etree.tostring(root.find("ds:Signature", NS))))
    indication, sub, reason = check(dump(root), engine)
    assert (indication, sub) == (Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE)
    assert "exactly one signature" in reason


def test_duplicate_id_signature_wrapping_is_refused(signed_envelope, engine):
    root = tree(signed_envelope)
    props = root.find(".//xades:SignedProperties", NS)
    decoy = etree.fromstring(etree.tostring(props))
    decoy.find(".//xades:SigningTime", NS).text = "2020-01-01T00:00:00Z"
    root.find(".//ds:Object", NS).append(decoy)
    indication, _, reason = check(dump(root), engine)
    assert indication is Indication.TOTAL_FAILED
    assert "signature wrapping" in reason or "Object" in reason


def test_signature_covering_part_of_the_envelope_is_refused(signed_envelope, es_signer, engine):
    root = tree(signed_envelope)
    header = root.find("e:Header", NS)
    header.set("Id", "hdr")
    ref = root.find(".//ds:Reference[@URI='']", NS)
    ref.set("URI", "#hdr")
    ref.find("ds:DigestValue", NS).text = base64.b64encode(
        digest(canonicalize(header, C14N.EXC), Digest.SHA256)
    ).decode()
    indication, sub, reason = check(resign(root, es_signer), engine)
    assert (indication, sub) == (Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE)
    assert "does not cover the whole envelope" in reason


def test_sha1_is_refused_as_a_crypto_constraint(signed_envelope, es_signer, engine):
    root = tree(signed_envelope)
    ref = root.find(".//ds:Reference[@URI='']", NS)
    ref.find("ds:DigestMethod", NS).set("Algorithm", Digest.SHA1.value)
    ref.find("ds:DigestValue", NS).text = base64.b64encode(
        digest(
            etree.tostring(
                etree.fromstring(signed_envelope.split(b"<ds:Signature")[0] + b"</Envelope>"),
                method="c14n",
                exclusive=True,
            ),
            Digest.SHA1,
        )
    ).decode()
    indication, sub, reason = check(resign(root, es_signer), engine)
    assert indication is Indication.INDETERMINATE, reason
    assert sub is SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE
    assert "SHA-1" in reason


def test_rsa_below_2048_bits_is_refused(pki, envelope, engine):
    weak_key = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the point of the test
    pki.issue_signer("weak-rsa", key=weak_key)
    indication, sub, reason = check(sign_xml(envelope, signer_for(pki, "weak-rsa")), engine)
    assert (indication, sub) == (
        Indication.INDETERMINATE,
        SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE,
    )
    assert "1024 bits" in reason


def test_certificate_not_chaining_to_an_anchor(signed_envelope, tmp_path):
    other = create_dev_pki(tmp_path / "other")
    stranger = TrustEngine(TrustPolicy(anchors=(other.root(),), allow_fetching=False))
    indication, sub, _ = check(signed_envelope, stranger)
    assert (indication, sub) == (Indication.INDETERMINATE, SubIndication.NO_CERTIFICATE_CHAIN_FOUND)


def test_certificate_inside_the_document_is_never_trusted_by_itself(envelope, engine):
    from gateway.pki_issue import Profile, build_cert, name

    key = ec.generate_private_key(ec.SECP256R1())
    subject = name(cn="Ministerio de Justicia (ES-MJ)", o="Ministerio de Justicia", c="ES")
    now = datetime.now(UTC)
    profile = Profile(key_usage=frozenset({"digitalSignature", "nonRepudiation"}), ca_path_length=0)
    cert = build_cert(
        subject=subject, public_key=key.public_key(), issuer_cert=None, issuer_key=key,
        not_before=now - timedelta(hours=1), not_after=now + timedelta(days=30), profile=profile,
    )  # fmt: skip
    indication, sub, _ = check(sign_xml(envelope, Signer(key, cert)), engine)
    assert (indication, sub) == (Indication.INDETERMINATE, SubIndication.NO_CERTIFICATE_CHAIN_FOUND)


def test_expired_certificate(pki, envelope, engine):
    now = datetime.now(UTC)
    pki.issue_signer(
        "expired", not_before=now - timedelta(days=400), not_after=now - timedelta(days=1)
    )
    indication, sub, reason = check(sign_xml(envelope, signer_for(pki, "expired")), engine)
    assert (indication, sub) == (Indication.INDETERMINATE, SubIndication.OUT_OF_BOUNDS_NO_POE)
    assert "expired" in reason


def test_certificate_without_signing_key_usage(pki, envelope, engine):
    pki.issue_signer("encipher-only", key_usage=frozenset({"keyEncipherment"}))
    indication, sub, reason = check(sign_xml(envelope, signer_for(pki, "encipher-only")), engine)
    assert (indication, sub) == (Indication.INDETERMINATE, SubIndication.CHAIN_CONSTRAINTS_FAILURE)
    assert "nonRepudiation" in reason


def test_signing_certificate_property_must_match_the_key_info(pki, signed_envelope, engine):
    root = tree(signed_envelope)
    other = pki.cert("AR-MJ").public_bytes(Encoding.DER)
    root.find(".//ds:X509Certificate", NS).text = base64.b64encode(other).decode()
    indication, sub, _ = check(dump(root), engine)
    assert indication is not Indication.TOTAL_PASSED
    assert sub is SubIndication.NO_SIGNING_CERTIFICATE_FOUND


def test_a_certificate_given_twice_in_key_info_is_read_twice(es_signer, signed_envelope, engine):
    from signing.xades_parts import certificates

    root = tree(signed_envelope)
    first = root.find(".//ds:X509Certificate", NS)
    first.addnext(etree.fromstring(etree.tostring(first)))
    read = certificates(root.find("ds:Signature", NS))
    der = es_signer.cert.public_bytes(Encoding.DER)
    assert len(read) == 3 and read[0] is not read[1]
    assert read[0].der == read[1].der == der and read[0].cert == es_signer.cert
    assert check(dump(root), engine)[0] is Indication.TOTAL_PASSED


def test_revoked_certificate_fails(tmp_path, envelope):
    from tests.servers import revocation_server

    folder = tmp_path / "pki"
    with revocation_server(folder) as url:
        live = create_dev_pki(folder, crl_url=f"{url}/crl")
        live.issue_signer("revoked-signer", revoked=True)
        live.issue_signer("good-signer")
        engine = TrustEngine(
            TrustPolicy(anchors=(live.root(),), revocation=RevocationPolicy.HARD, cache_seconds=0)
        )
        bad = check(sign_xml(envelope, signer_for(live, "revoked-signer")), engine)
        good = verify_envelope(sign_xml(envelope, signer_for(live, "good-signer")), engine)
    assert bad[:2] == (Indication.TOTAL_FAILED, SubIndication.REVOKED)
    assert good.verdict.indication is Indication.TOTAL_PASSED, good.verdict.reason
    assert good.signatures[0].revocation == "good"


def test_unreachable_revocation_source_is_indeterminate_in_hard_mode(tmp_path, envelope):
    live, signer = unreachable_crl_signer(tmp_path / "pki", "signer")
    signed = sign_xml(envelope, signer)
    hard = TrustEngine(TrustPolicy(anchors=(live.root(),), fetch_timeout=2))
    soft = TrustEngine(
        TrustPolicy(anchors=(live.root(),), revocation=RevocationPolicy.SOFT, fetch_timeout=2)
    )
    assert check(signed, hard)[:2] == (Indication.INDETERMINATE, SubIndication.TRY_LATER)
    soft_report = verify_envelope(signed, soft)
    assert soft_report.verdict.indication is Indication.TOTAL_PASSED
    assert any("soft-fail" in w for w in soft_report.signatures[0].warnings)


def test_require_mode_makes_missing_revocation_data_indeterminate(signed_envelope, pki):
    strict = TrustEngine(
        TrustPolicy(
            anchors=(pki.root(),), revocation=RevocationPolicy.REQUIRE, allow_fetching=False
        )
    )
    assert check(signed_envelope, strict)[0] is Indication.INDETERMINATE


def test_failure_outranks_an_untrusted_signer(signed_envelope, tmp_path):
    stranger = TrustEngine(
        TrustPolicy(anchors=(create_dev_pki(tmp_path / "x").root(),), allow_fetching=False)
    )
    tampered = signed_envelope.replace(b"<Language>es", b"<Language>pt", 1)
    assert check(tampered, stranger)[:2] == (Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE)


def test_envelope_breaking_a_profile_rule_is_refused_after_signing(envelope, sign, engine):
    root = tree(envelope)
    facts = root.find(".//e:SummaryOfFacts", NS)
    facts.getparent().remove(facts)
    indication, sub, reason = check(sign(dump(root)), engine)
    assert (indication, sub) == (Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE)
    assert "SummaryOfFacts" in reason


@pytest.mark.parametrize(
    "data",
    [b"", b"   ", b"<Envelope", b"not xml at all"],
    ids=["empty", "blank", "truncated", "text"],
)
def test_empty_truncated_and_non_xml_documents_fail_with_a_reason(data, engine):
    indication, sub, reason = check(data, engine)
    assert (indication, sub) == (Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE)
    assert reason


def test_truncated_signed_envelope_fails(signed_envelope, engine):
    indication, _, reason = check(signed_envelope[: len(signed_envelope) // 2], engine)
    assert indication is Indication.TOTAL_FAILED
    assert "well-formed" in reason


def test_unsigned_envelope_fails(envelope, engine):
    indication, _, reason = check(envelope, engine)
    assert indication is Indication.TOTAL_FAILED and "not signed" in reason


def test_b_t_signature_carries_a_verified_timestamp(pki, envelope, es_signer, engine):
    from signing.timestamp import HttpTimeStamper
    from signing.xades_sign import Level
    from tests.servers import tsa_server

    with tsa_server(pki.cert("tsa"), pki.key("tsa")) as url:
        signed = sign_xml(envelope, es_signer, level=Level.B_T, timestamper=HttpTimeStamper(url))
    report = verify_envelope(signed, engine)
    assert report.verdict.indication is Indication.TOTAL_PASSED, report.verdict.reason
    (sig,) = report.signatures
    assert (sig.level, sig.signing_time_source) == ("XAdES-B-T", "timestamp")
    # A time-stamp moved onto another signature does not vouch for it.
    other = sign_xml(envelope.replace(b"<Language>es", b"<Language>pt", 1), es_signer)
    stamp = etree.fromstring(signed).find(".//xades:UnsignedProperties", NS)
    root = tree(other)
    root.find(".//xades:QualifyingProperties", NS).append(stamp)
    indication, _, reason = check(dump(root), engine)
    assert indication is Indication.TOTAL_FAILED and "time-stamp" in reason


def test_signing_refuses_an_already_signed_document(signed_envelope, es_signer):
    from signing.errors import SigningError

    with pytest.raises(SigningError, match="already signed"):
        sign_xml(signed_envelope, es_signer)


def test_each_signature_is_its_own_and_the_signer_template_is_left_as_it_was(
    envelope, es_signer, engine
):
    """Signatures are copies of one template per signer: no value leaks from one into the next."""
    first = sign_xml(envelope, es_signer)
    second = sign_xml(envelope, es_signer)
    for data in (first, second):
        assert verify_envelope(data, engine).verdict.indication is Indication.TOTAL_PASSED
        sig_id = tree(data).find("ds:Signature", NS).get("Id")
        # Signature, its two references, value, target, signed properties, data object format.
        assert data.count(sig_id.encode()) == 7
        assert data.count(b"<ds:Signature ") == 1 and data.count(b"<xades:SignedProperties ") == 1
    assert tree(first).find("ds:Signature", NS).get("Id") != tree(second).find(
        "ds:Signature", NS
    ).get("Id")


@pytest.mark.parametrize(
    "declares",
    [f'xmlns="{DS}"', f'xmlns:ds="{DS}"', f'xmlns:other="{DS}"', f'xmlns="{XADES}"',
     'xmlns:ds="urn:not-xmldsig"', 'xmlns:xades="urn:not-xades"'],
)  # fmt: skip
def test_the_signature_declares_its_prefixes_whatever_the_document_declares(
    declares, es_signer, engine
):
    data = sign_xml(f"<Document {declares}><Part>x</Part></Document>".encode(), es_signer)
    signature = tree(data).find("ds:Signature", NS)
    assert signature.prefix == "ds" and signature.nsmap["ds"] == DS
    qualifying = signature.find("ds:Object/xades:QualifyingProperties", NS)
    assert qualifying.prefix == "xades" and qualifying.nsmap["xades"] == XADES
    assert all(e.prefix in ("ds", "xades") for e in signature.iter())
    report = verify_xml(data, engine).report
    assert report.verdict.indication is Indication.TOTAL_PASSED, report.verdict.reason


def test_xmlsec1_verifies_what_rogatory_signs(signed_envelope, pki: DevPKI, tmp_path: Path):
    import shutil
    import subprocess

    if shutil.which("xmlsec1") is None:
        pytest.skip("xmlsec1 is not installed (Debian package xmlsec1)")
    path = tmp_path / "signed.xml"
    path.write_bytes(signed_envelope)
    ok = subprocess.run(
        ["xmlsec1", "--verify", "--trusted-pem", str(pki.root_path), "--id-attr:Id",
         "SignedProperties", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    path.write_bytes(signed_envelope.replace(b"<Language>es", b"<Language>en", 1))
    bad = subprocess.run(
        ["xmlsec1", "--verify", "--trusted-pem", str(pki.root_path), "--id-attr:Id",
         "SignedProperties", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode != 0


@pytest.mark.parametrize(
    "declared",
    [f'xmlns:aaa="{DS}" xmlns:ds="{DS}"', f'xmlns:x1="{XADES}" xmlns:xades="{XADES}"'],
    ids=["ds-uri-twice", "xades-uri-twice"],
)
def test_a_document_binding_the_signature_namespace_twice_is_refused_not_signed_badly(
    es_signer, declared
):
    # lxml would write the moved SignedInfo or SignedProperties under the document's other
    # prefix, so the signature could never verify: refuse with a reason instead.
    data = f"<r {declared}><a>x</a></r>".encode()
    with pytest.raises(SigningError, match="would never verify"):
        sign_xml(data, es_signer)
