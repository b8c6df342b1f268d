"""verify_pdf: honest documents pass; every published attack in tests/pdf_attacks.py fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import signers
from pyhanko.sign.diff_analysis import DEFAULT_DIFF_POLICY, ModificationLevel
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko_certvalidator import ValidationContext

from gateway.pki import DevPKI, create_dev_pki
from signing.pades_verify import verify_pdf
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from signing.verdict import DocumentReport, Indication, SubIndication
from tests import pdf_attacks as attacks
from tests.servers import revocation_server, tsa_server

FAILED, INDETERMINATE, PASSED = (
    Indication.TOTAL_FAILED,
    Indication.INDETERMINATE,
    Indication.TOTAL_PASSED,
)


@pytest.fixture(scope="module")
def signer(pki: DevPKI) -> signers.SimpleSigner:
    return attacks.pdf_signer(pki)


@pytest.fixture(scope="module")
def base() -> bytes:
    return attacks.base_pdf()


@pytest.fixture(scope="module")
def signed(base: bytes, signer: signers.SimpleSigner) -> bytes:
    return attacks.sign(base, signer)


@pytest.fixture(scope="module")
def certified(base: bytes, signer: signers.SimpleSigner) -> bytes:
    """Certified with DocMDP P=2: form filling and signing permitted."""
    return attacks.sign(base, signer, certify=MDPPerm.FILL_FORMS)


def expect(
    report: DocumentReport, indication: Indication, sub: SubIndication | None, reason: str
) -> None:
    verdict = report.verdict
    assert (verdict.indication, verdict.subindication) == (indication, sub), verdict
    assert reason in verdict.reason, verdict.reason


# --- honest documents


def test_signed_once_passes_and_reports_what_it_covers(signed: bytes, engine: TrustEngine) -> None:
    report = verify_pdf(signed, engine, path="request.pdf")
    expect(report, PASSED, None, "the signature is valid")
    (sig,) = report.signatures
    assert report.kind == "pdf" and report.path == "request.pdf"
    assert "Ministerio de Justicia (ES-MJ)" in (sig.signer or "")
    assert sig.signing_time_source == "claimed" and sig.signing_time is not None
    assert sig.level == "PAdES-B-B"
    assert "Rogatory Development Root CA" in sig.chain[0]
    assert sig.details["covers"] == "the whole file"
    assert sig.details["modification_level"] == "NONE" and sig.details["changes"] == []
    assert report.to_json()["signatures"][0]["covers"] == "the whole file"


def test_signed_twice_passes_and_names_the_second_signature(
    signed: bytes, signer: signers.SimpleSigner, engine: TrustEngine
) -> None:
    report = verify_pdf(attacks.sign(signed, signer, field="Sig2"), engine)
    expect(report, PASSED, None, "all 2 signatures are valid")
    first, second = report.signatures
    assert first.details["covers"] == "revision 2 of 3"
    assert first.details["changes"] == ["revision 3: signature 'Sig2'"]
    assert first.details["changes_permitted"] is True
    assert second.details["covers"] == "the whole file"


def test_certified_for_form_filling_then_filled_and_signed_passes(
    certified: bytes, signer: signers.SimpleSigner, engine: TrustEngine
) -> None:
    filled = attacks.shadow_replace(certified, "250 EUR")  # the same edit, now permitted
    report = verify_pdf(attacks.sign(filled, signer, field="Sig2"), engine)
    expect(report, PASSED, None, "all 2 signatures are valid")
    author = report.signatures[0]
    assert author.details["docmdp"] == 2
    assert author.details["modification_level"] == "FORM_FILLING"
    assert "revision 3: form field 'amount' filled in or changed" in author.details["changes"]
    assert "certified with DocMDP P=2" in report.warnings[0]


@pytest.fixture(scope="module")
def lta_pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevPKI, str]]:
    """A PKI whose certificates name a live CRL/OCSP server, and its TSA's URL."""
    folder = tmp_path_factory.mktemp("lta") / "pki"
    with revocation_server(folder) as url:
        pki = create_dev_pki(folder, crl_url=f"{url}/crl", ocsp_url=f"{url}/ocsp")
        with tsa_server(pki.cert("tsa"), pki.key("tsa")) as tsa_url:
            yield pki, tsa_url


def _anchor(pki: DevPKI) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(pki.root().public_bytes(Encoding.DER))


def _offline_engine(pki: DevPKI) -> TrustEngine:
    return TrustEngine(
        TrustPolicy(anchors=(pki.root(),), revocation=RevocationPolicy.HARD, allow_fetching=False)
    )


def test_lta_extended_document_passes_offline_from_its_own_validation_data(
    base: bytes, lta_pki: tuple[DevPKI, str]
) -> None:
    pki, tsa_url = lta_pki
    context = ValidationContext(trust_roots=[_anchor(pki)], allow_fetching=True)
    lta = attacks.sign(
        base, attacks.pdf_signer(pki), timestamper=HTTPTimeStamper(tsa_url), lta=context
    )
    report = verify_pdf(lta, _offline_engine(pki))  # no fetching: the DSS must suffice
    expect(report, PASSED, None, "all 2 signatures are valid")
    sig, doc_ts = report.signatures
    assert sig.level == "PAdES-B-LTA"
    assert sig.signing_time_source == "timestamp"
    assert sig.revocation == "good"
    assert any("validation data added to the DSS" in c for c in sig.details["changes"])
    assert any("document time-stamp" in c for c in sig.details["changes"])
    assert doc_ts.details["type"] == "document time-stamp"
    assert doc_ts.level == "document time-stamp" and doc_ts.signing_time_source == "timestamp"


def test_b_t_signature_reports_the_time_stamp_as_signing_time(
    base: bytes, lta_pki: tuple[DevPKI, str]
) -> None:
    pki, tsa_url = lta_pki
    signed = attacks.sign(base, attacks.pdf_signer(pki), timestamper=HTTPTimeStamper(tsa_url))
    engine = TrustEngine(
        TrustPolicy(anchors=(pki.root(),), revocation=RevocationPolicy.SOFT, allow_fetching=True)
    )
    report = verify_pdf(signed, engine)
    expect(report, PASSED, None, "the signature is valid")
    assert report.signatures[0].level == "PAdES-B-T"
    assert report.signatures[0].signing_time_source == "timestamp"


# --- shadow attacks, incremental saving attacks, certification attacks

MODIFIED = "the document was modified after it was signed, beyond what the policy permits"

ATTACKS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("shadow hide", attacks.shadow_hide, "appearance of form field 'stamp' changed"),
    ("shadow replace", attacks.shadow_replace, "form field 'amount' filled in or changed"),
    (
        "shadow replace in place",
        attacks.shadow_replace_in_place,
        "appearance of form field 'amount' rewritten in place",
    ),
    ("shadow hide-and-replace", attacks.shadow_hide_and_replace, "the content of page 1 changed"),
    ("page content changed", attacks.change_page_content, "the content of page 2 changed"),
    ("page added", attacks.add_page, "1 page(s) added"),
    ("page removed", attacks.remove_page, "1 page(s) removed"),
    ("annotation over a page", attacks.add_annotation, "a FreeText annotation added on page 1"),
]


@pytest.mark.parametrize(
    ("attack", "named"), [(a, n) for _, a, n in ATTACKS], ids=[i for i, _, _ in ATTACKS]
)
def test_changes_after_an_approval_signature_fail(
    signed: bytes, engine: TrustEngine, attack: Callable[[bytes], bytes], named: str
) -> None:
    report = verify_pdf(attack(signed), engine)
    expect(report, FAILED, SubIndication.HASH_FAILURE, MODIFIED)
    assert named in report.verdict.reason
    assert report.signatures[0].details["changes_permitted"] is False


def test_pyhanko_default_policy_lets_shadow_replace_pass_as_form_filling(signed: bytes) -> None:
    """Why the policy exists: measured with pyHanko's default difference policy."""
    reader = PdfFileReader(BytesIO(attacks.shadow_replace(signed)))
    (sig,) = reader.embedded_signatures
    sig.compute_integrity_info(DEFAULT_DIFF_POLICY)
    assert sig.diff_result.modification_level is ModificationLevel.FORM_FILLING


CERTIFIED_ATTACKS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    (
        "appearance rewritten in place",
        attacks.shadow_replace_in_place,
        "appearance of form field 'amount' rewritten in place",
    ),
    ("field hidden", attacks.shadow_hide, "appearance of form field 'stamp' changed"),
    ("annotation added", attacks.add_annotation, "a FreeText annotation added on page 1"),
    ("page added", attacks.add_page, "1 page(s) added"),
]


@pytest.mark.parametrize(
    ("attack", "named"),
    [(a, n) for _, a, n in CERTIFIED_ATTACKS],
    ids=[i for i, _, _ in CERTIFIED_ATTACKS],
)
def test_certified_document_modified_beyond_its_permissions_fails(
    certified: bytes, engine: TrustEngine, attack: Callable[[bytes], bytes], named: str
) -> None:
    report = verify_pdf(attack(certified), engine)
    expect(report, FAILED, SubIndication.HASH_FAILURE, named)


def test_certified_with_no_changes_permitted_then_filled_fails(
    base: bytes, signer: signers.SimpleSigner, engine: TrustEngine
) -> None:
    locked = attacks.sign(base, signer, certify=MDPPerm.NO_CHANGES)
    report = verify_pdf(attacks.shadow_replace(locked), engine)
    expect(report, FAILED, SubIndication.HASH_FAILURE, "form field 'amount' filled in or changed")
    assert report.signatures[0].details["docmdp"] == 1


# --- byte ranges and forged signatures


def test_byte_range_that_leaves_bytes_uncovered_fails(
    signed: bytes, signer: signers.SimpleSigner, engine: TrustEngine
) -> None:
    report = verify_pdf(attacks.uncovered_byte_range(signed, signer), engine)
    expect(
        report,
        FAILED,
        SubIndication.FORMAT_FAILURE,
        "does not cover the whole revision it belongs to",
    )


def test_overlapping_byte_range_fails(signed: bytes, engine: TrustEngine) -> None:
    report = verify_pdf(attacks.overlapping_byte_range(signed), engine)
    expect(report, FAILED, SubIndication.FORMAT_FAILURE, "odd, gapped or overlapping byte range")


def test_injected_second_signature_with_a_copied_signature_value_fails(
    signed: bytes, signer: signers.SimpleSigner, engine: TrustEngine
) -> None:
    report = verify_pdf(attacks.forged_second_signature(signed, signer), engine)
    expect(report, FAILED, SubIndication.HASH_FAILURE, "do not match the digest")
    first, second = report.signatures
    assert first.verdict.ok and second.details["field"] == "Sig2"


def test_signature_with_an_empty_value_fails(signed: bytes, engine: TrustEngine) -> None:
    report = verify_pdf(attacks.unsigned_signature_value(signed), engine)
    expect(report, FAILED, SubIndication.FORMAT_FAILURE, "signature 'Sig1' cannot be read")


# --- failure outranks indeterminate


def test_manipulated_document_fails_even_when_the_signer_is_untrusted(
    signed: bytes, tmp_path: Path
) -> None:
    stranger = create_dev_pki(tmp_path / "other")
    report = verify_pdf(attacks.shadow_replace(signed), _offline_engine(stranger))
    expect(report, FAILED, SubIndication.HASH_FAILURE, "form field 'amount'")


def test_untrusted_signer_is_indeterminate(signed: bytes, tmp_path: Path) -> None:
    stranger = create_dev_pki(tmp_path / "other")
    report = verify_pdf(signed, _offline_engine(stranger))
    expect(report, INDETERMINATE, SubIndication.NO_CERTIFICATE_CHAIN_FOUND, "trust anchor")


def test_without_a_trust_engine_the_signature_is_indeterminate(signed: bytes) -> None:
    report = verify_pdf(signed, None)
    expect(report, INDETERMINATE, SubIndication.NO_CERTIFICATE_CHAIN_FOUND, "no trust anchor")


def test_signer_expired_at_the_validation_time_is_indeterminate(
    pki: DevPKI, base: bytes, engine: TrustEngine
) -> None:
    now = datetime.now(UTC)
    pki.issue_signer("ES-SHORT", not_after=now + timedelta(days=1))
    signed = attacks.sign(base, attacks.pdf_signer(pki, "ES-SHORT"))
    expect(verify_pdf(signed, engine), PASSED, None, "valid")
    report = verify_pdf(signed, engine, at=now + timedelta(days=2))
    expect(report, INDETERMINATE, SubIndication.OUT_OF_BOUNDS_NO_POE, "expired")


def test_signer_without_a_signing_key_usage_is_indeterminate(
    pki: DevPKI, base: bytes, engine: TrustEngine
) -> None:
    pki.issue_signer("ES-NOKU", key_usage=frozenset({"keyAgreement"}))
    report = verify_pdf(attacks.sign(base, attacks.pdf_signer(pki, "ES-NOKU")), engine)
    expect(report, INDETERMINATE, SubIndication.CHAIN_CONSTRAINTS_FAILURE, "key usage")


def test_revoked_signer_fails(base: bytes, lta_pki: tuple[DevPKI, str]) -> None:
    pki, _ = lta_pki
    pki.issue_signer("ES-REVOKED")
    signed = attacks.sign(base, attacks.pdf_signer(pki, "ES-REVOKED"))
    pki.revoke("ES-REVOKED")
    engine = TrustEngine(  # fetches the CRL / OCSP answer from the server on 127.0.0.1
        TrustPolicy(anchors=(pki.root(),), revocation=RevocationPolicy.HARD, allow_fetching=True)
    )
    report = verify_pdf(signed, engine)
    expect(report, FAILED, SubIndication.REVOKED, "was revoked on")
    assert report.signatures[0].revocation == "revoked"


def test_tampered_document_by_a_revoked_signer_fails_for_the_tampering_first(
    base: bytes, lta_pki: tuple[DevPKI, str]
) -> None:
    pki, _ = lta_pki
    pki.issue_signer("ES-REVOKED-2", revoked=False)
    signed = attacks.sign(base, attacks.pdf_signer(pki, "ES-REVOKED-2"))
    pki.revoke("ES-REVOKED-2")
    engine = TrustEngine(
        TrustPolicy(anchors=(pki.root(),), revocation=RevocationPolicy.HARD, allow_fetching=True)
    )
    report = verify_pdf(attacks.add_page(signed), engine)
    expect(report, FAILED, SubIndication.HASH_FAILURE, "1 page(s) added")


# --- documents that are not what they claim


def test_encrypted_pdf_fails_and_says_so(signed: bytes, engine: TrustEngine) -> None:
    report = verify_pdf(attacks.encrypted_pdf(signed), engine)
    expect(report, FAILED, SubIndication.FORMAT_FAILURE, "the PDF is encrypted")


def test_truncated_pdf_fails(signed: bytes, engine: TrustEngine) -> None:
    report = verify_pdf(attacks.truncated(signed), engine)
    expect(report, FAILED, SubIndication.FORMAT_FAILURE, "the PDF cannot be parsed")


def test_a_file_that_is_not_a_pdf_fails(engine: TrustEngine) -> None:
    report = verify_pdf(attacks.NOT_A_PDF, engine)
    expect(report, FAILED, SubIndication.FORMAT_FAILURE, "not a PDF")


def test_unsigned_pdf_fails(base: bytes, engine: TrustEngine) -> None:
    expect(verify_pdf(base, engine), FAILED, SubIndication.FORMAT_FAILURE, "not signed")


@pytest.mark.parametrize("cut", [100, 1000, 3000])
def test_garbage_after_the_header_never_raises(
    signed: bytes, engine: TrustEngine, cut: int
) -> None:
    mangled = signed[:cut] + bytes(range(256)) * 4 + signed[cut + 1024 :]
    report = verify_pdf(mangled, engine)
    assert report.verdict.indication is FAILED
