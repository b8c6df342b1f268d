"""Signed evidences: building, signing, reading back, and every evidence Rogatory must refuse."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

from gateway.envelope import check_envelope
from gateway.evidence import (
    AttachmentDigest,
    Evidence,
    EvidenceError,
    EvidenceReason,
    GatewayRef,
    MessageRef,
    build_evidence,
    evidence_xml,
    read_evidence,
    sign_evidence,
)
from gateway.model import EvidenceType
from gateway.pki import DevPKI, create_dev_pki
from schemas import EVIDENCE_NS, evidence_schema_path
from signing.keys import Signer
from signing.trust import TrustEngine
from signing.xades_sign import sign_xml
from tests.conftest import signer_for

GW_ES = GatewayRef("gw-es", "Pasarela Rogatory de España", "ES")
REF = MessageRef(
    sha256_hex=hashlib.sha256(b"the envelope as received").hexdigest(),
    message_id="7c9e6679-7425-40de-944b-e07fc1f90ae7",
    conversation_id="0f8fad5b-d9cb-469f-a165-70867728950e",
    sender_authority="ES-MJ",
    recipient_authority="AR-MJ",
    attachments=(
        AttachmentDigest("att-1", hashlib.sha256(b"one").hexdigest()),
        AttachmentDigest("att-2", hashlib.sha256(b"two").hexdigest()),
    ),
)
REASON = EvidenceReason("xsd", "/Envelope/Header/MessageId: the required element is missing")
NEGATIVE = [t for t in EvidenceType if t.negative]
POSITIVE = [t for t in EvidenceType if not t.negative]


@pytest.fixture(scope="module")
def gateway_signer(pki: DevPKI) -> Signer:
    # gw-es is issued with digitalSignature: its TLS identity also signs its evidences.
    return signer_for(pki, "gw-es")


def evidence_of(kind: EvidenceType, **changes: object) -> Evidence:
    reasons = (REASON,) if kind.negative else ()
    return build_evidence(kind, REF, GW_ES, reasons=reasons, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def signed(gateway_signer: Signer) -> bytes:
    return sign_evidence(evidence_of(EvidenceType.SUBMISSION_ACCEPTANCE), gateway_signer)


# ---- building ---------------------------------------------------------------


def test_every_type_the_model_knows_is_in_the_schema():
    schema = etree.parse(str(evidence_schema_path()))
    values = schema.xpath(
        "//xs:simpleType[@name='EvidenceKind']//xs:enumeration/@value",
        namespaces={"xs": "http://www.w3.org/2001/XMLSchema"},
    )
    assert sorted(values) == sorted(t.value for t in EvidenceType)


def test_build_takes_its_time_from_the_clock_and_a_fresh_id():
    at = datetime(2025, 3, 1, 9, 30, 15, 250000, tzinfo=UTC)
    first = evidence_of(EvidenceType.DELIVERY, clock=lambda: at)
    second = evidence_of(EvidenceType.DELIVERY, clock=lambda: at)
    assert first.event_time == at
    assert first.evidence_id != second.evidence_id
    assert b"<EventTime>2025-03-01T09:30:15.250000Z</EventTime>" in evidence_xml(first)


@pytest.mark.parametrize("kind", NEGATIVE, ids=str)
def test_a_negative_evidence_without_a_reason_is_refused(kind: EvidenceType):
    with pytest.raises(EvidenceError, match="negative and must give at least one reason"):
        build_evidence(kind, REF, GW_ES)


def test_a_positive_evidence_with_a_reason_is_refused():
    with pytest.raises(EvidenceError, match="positive and gives no reason"):
        build_evidence(EvidenceType.DELIVERY, REF, GW_ES, reasons=[REASON])


def test_only_a_submission_rejection_may_leave_the_message_unnamed():
    unnamed = MessageRef.of_bytes(b"<not xml", sender_authority="ES-MJ")
    with pytest.raises(EvidenceError, match="MessageId, RecipientAuthority"):
        build_evidence(EvidenceType.NON_DELIVERY, unnamed, GW_ES, reasons=[REASON])
    rejection = build_evidence(EvidenceType.SUBMISSION_REJECTION, unnamed, GW_ES, reasons=[REASON])
    assert b"<MessageId>" not in evidence_xml(rejection)


def test_an_event_time_without_a_zone_is_refused():
    with pytest.raises(EvidenceError, match="time zone"):
        evidence_of(EvidenceType.DELIVERY, clock=lambda: datetime(2025, 3, 1, 9, 30))


def test_what_the_schema_refuses_is_not_written():
    bad = evidence_of(EvidenceType.DELIVERY, details=" ")
    bad_issuer = build_evidence(EvidenceType.RETRIEVAL, REF, GatewayRef("gw-es", "x", "Spain"))
    with pytest.raises(EvidenceError, match=r"/Evidence/Details: .*pattern"):
        evidence_xml(bad)
    with pytest.raises(EvidenceError, match=r"/Evidence/Issuer/Country: "):
        evidence_xml(bad_issuer)


def test_message_ref_of_an_envelope(envelope: bytes):
    _, parsed = check_envelope(envelope)
    ref = MessageRef.of_envelope(parsed, envelope)
    assert ref.sha256_hex == hashlib.sha256(envelope).hexdigest()
    assert (ref.message_id, ref.sender_authority) == (parsed.message_id, parsed.sender.id)
    assert [a.sha256_hex for a in ref.attachments] == [a.sha256_hex for a in parsed.attachments]


# ---- round trip -------------------------------------------------------------


@pytest.mark.parametrize("kind", list(EvidenceType), ids=str)
def test_every_type_round_trips(kind: EvidenceType, gateway_signer: Signer, engine: TrustEngine):
    evidence = evidence_of(kind, details="Recibido por la pasarela\nsin incidencias.")
    verified = read_evidence(sign_evidence(evidence, gateway_signer), engine, expect_issuer="gw-es")
    assert verified.evidence == evidence
    assert verified.report.verdict.ok
    (signature,) = verified.report.signatures
    assert signature.level == "XAdES-B-B"


def test_a_rejection_of_unreadable_bytes_round_trips(gateway_signer: Signer, engine: TrustEngine):
    evidence = build_evidence(
        EvidenceType.SUBMISSION_REJECTION,
        MessageRef.of_bytes(b"\x00garbage"),
        GW_ES,
        reasons=[REASON, EvidenceReason("xml", "the body is not well-formed XML")],
        clock=lambda: datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=-3))),
    )
    assert read_evidence(sign_evidence(evidence, gateway_signer), engine).evidence == evidence


def test_b_t_with_a_timestamper(pki: DevPKI, gateway_signer: Signer, engine: TrustEngine):
    from signing.timestamp import HttpTimeStamper
    from tests.servers import tsa_server

    evidence = evidence_of(EvidenceType.RELAY_ACCEPTANCE)
    with tsa_server(pki.cert("tsa"), pki.key("tsa")) as url:
        data = sign_evidence(evidence, gateway_signer, timestamper=HttpTimeStamper(url))
    verified = read_evidence(data, engine)
    assert verified.evidence == evidence
    (signature,) = verified.report.signatures
    assert (signature.level, signature.signing_time_source) == ("XAdES-B-T", "timestamp")


# ---- refused ----------------------------------------------------------------


def test_a_tampered_evidence_is_refused(signed: bytes, engine: TrustEngine):
    tampered = signed.replace(b"<RecipientAuthority>AR-MJ", b"<RecipientAuthority>CO-FGN", 1)
    assert tampered != signed
    with pytest.raises(EvidenceError, match=r"signature is not valid \(TOTAL-FAILED/HASH_FAILURE"):
        read_evidence(tampered, engine)


def test_signing_the_built_tree_gives_the_bytes_of_signing_its_text(
    gateway_signer: Signer, monkeypatch: pytest.MonkeyPatch
):
    """sign_evidence signs the tree it built; the document is the one the text round trip gave."""
    import signing.xades_sign as xades_sign
    from gateway.signed_document import sign_document

    monkeypatch.setattr(xades_sign.secrets, "token_hex", lambda n: "0" * (2 * n))
    monkeypatch.setattr(xades_sign, "datetime", _FrozenClock)
    value = re.compile(rb"(<ds:SignatureValue [^>]*>)[^<]*(</ds:SignatureValue>)")  # ECDSA: random
    for kind in EvidenceType:
        evidence = evidence_of(kind, details='a <detail> & "quotes"\r\n\u00e9')
        from_tree = sign_evidence(evidence, gateway_signer)
        from_text = sign_document(evidence_xml(evidence), gateway_signer, timestamper=None)
        assert value.sub(rb"\1\2", from_tree) == value.sub(rb"\1\2", from_text)


class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz: object = None) -> _FrozenClock:  # type: ignore[override]
        return cls(2025, 3, 1, 9, 30, 15, tzinfo=UTC)


def test_an_unsigned_evidence_is_refused(engine: TrustEngine):
    unsigned = evidence_xml(evidence_of(EvidenceType.DELIVERY))
    with pytest.raises(EvidenceError, match="not signed"):
        read_evidence(unsigned, engine)


def test_an_evidence_signed_by_an_untrusted_key_is_refused(
    tmp_path_factory: pytest.TempPathFactory, engine: TrustEngine
):
    stranger = create_dev_pki(tmp_path_factory.mktemp("stranger") / "pki")
    data = sign_evidence(evidence_of(EvidenceType.DELIVERY), signer_for(stranger, "gw-es"))
    with pytest.raises(EvidenceError, match=r"signature is not valid \(INDETERMINATE"):
        read_evidence(data, engine)


def test_a_signed_envelope_is_not_an_evidence(signed_envelope: bytes, engine: TrustEngine):
    with pytest.raises(EvidenceError, match=r"not a Rogatory evidence: its root is .*Envelope"):
        read_evidence(signed_envelope, engine)


def test_not_xml_at_all_is_refused(engine: TrustEngine):
    with pytest.raises(EvidenceError, match="signature is not valid"):
        read_evidence(b"%PDF-1.7 not an evidence", engine)


def test_a_signed_evidence_the_schema_refuses_is_refused(
    gateway_signer: Signer, engine: TrustEngine
):
    unsigned = evidence_xml(evidence_of(EvidenceType.DELIVERY))
    broken = unsigned.replace(b"<Country>ES</Country>", b"<Country>Spain</Country>", 1)
    with pytest.raises(EvidenceError, match=r"not valid .*/Evidence/Issuer/Country"):
        read_evidence(sign_xml(broken, gateway_signer), engine)


def test_a_signed_negative_evidence_without_a_reason_is_refused(
    gateway_signer: Signer, engine: TrustEngine
):
    unsigned = evidence_xml(evidence_of(EvidenceType.NON_DELIVERY))
    root = etree.fromstring(unsigned)
    root.remove(root.find(f"{{{EVIDENCE_NS}}}Reason"))
    data = sign_xml(etree.tostring(root, xml_declaration=True, encoding="UTF-8"), gateway_signer)
    with pytest.raises(EvidenceError, match="must give at least one reason"):
        read_evidence(data, engine)


def test_only_what_the_signature_covers_is_read(signed: bytes, engine: TrustEngine):
    # Content added beside the signature is outside what the policy allows.
    smuggled = signed.replace(b"</Evidence>", b"<Details>added later</Details></Evidence>")
    with pytest.raises(EvidenceError, match="signature is not valid"):
        read_evidence(smuggled, engine)


def test_an_evidence_from_another_gateway_is_refused(signed: bytes, engine: TrustEngine):
    with pytest.raises(EvidenceError, match="issued by 'gw-es', not by 'gw-ar'"):
        read_evidence(signed, engine, expect_issuer="gw-ar")


def test_xmlsec1_verifies_a_signed_evidence(signed: bytes, pki: DevPKI, tmp_path: Path):
    if shutil.which("xmlsec1") is None:
        pytest.skip("xmlsec1 is not installed (Debian package xmlsec1)")

    def xmlsec1(data: bytes) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "evidence.xml"
        path.write_bytes(data)
        return subprocess.run(
            ["xmlsec1", "--verify", "--trusted-pem", str(pki.root_path), "--id-attr:Id",
             "SignedProperties", str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    ok = xmlsec1(signed)
    assert ok.returncode == 0, ok.stderr
    bad = xmlsec1(signed.replace(b"<Country>ES", b"<Country>AR", 1))
    assert bad.returncode != 0
