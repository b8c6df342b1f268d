"""Conformance: pyHanko's own test PDFs (../shared/conformance/pades-samples), Rogatory's verdicts.

The README gives pyHanko's verdicts: ``form-update-*-sneaky*`` is a
disallowed modification, the other ``form-update-*`` form filling,
``coverage-anomalies/*`` does not cover the whole file. The signing PKI is
pyHanko's test CA (``crypto/testing-ca``); its root is the trust anchor, and
the validation time is 2021-01-01, inside the signers' validity (2020-2022).
Where Rogatory decides differently from pyHanko, docs/conformance.md
("PAdES samples") says why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509

from signing.pades_verify import verify_pdf
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy
from signing.verdict import DocumentReport, Indication
from signing.verdict import SubIndication as Sub

SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "pades-samples"
PDF = SAMPLES / "pdf"
AT = datetime(2021, 1, 1, tzinfo=UTC)
# Their revocation data in the DSS was fresh when they were made.
AT_OVERRIDE = {
    "pades-lta-dss-indirect-arrs-test.pdf": datetime(2020, 11, 1, tzinfo=UTC),
    "pades-lta-dss-indirect-arrs-test-2.pdf": datetime(2020, 11, 1, tzinfo=UTC),
}
FAILED, INDETERMINATE, PASSED = (
    Indication.TOTAL_FAILED,
    Indication.INDETERMINATE,
    Indication.TOTAL_PASSED,
)
MODIFIED = "modified after it was signed, beyond what the policy permits"

# Every signed sample that can be read; each other sample is unsigned, encrypted
# or unparseable and must come out TOTAL-FAILED FORMAT_FAILURE (see below).
SIGNED = [
    ("certified-with-indirect-refs-in-dir.pdf", PASSED, None),
    ("coverage-anomalies/base.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("coverage-anomalies/one-byterange.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("coverage-anomalies/signature-gap-too-big.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("coverage-anomalies/tail-uncovered.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("coverage-anomalies/weird-byterange.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("ed448-disallowed-hash.pdf", INDETERMINATE, Sub.CRYPTO_CONSTRAINTS_FAILURE),
    ("ed448-shake256-nolen.pdf", INDETERMINATE, Sub.NO_CERTIFICATE_CHAIN_FOUND),
    ("extensions-direct.pdf", INDETERMINATE, Sub.NO_CERTIFICATE_CHAIN_FOUND),
    ("extensions-indirect-not-all-paths.pdf", FAILED, Sub.HASH_FAILURE),
    ("extensions-indirect.pdf", INDETERMINATE, Sub.NO_CERTIFICATE_CHAIN_FOUND),
    ("extensions-update-direct.pdf", INDETERMINATE, Sub.NO_CERTIFICATE_CHAIN_FOUND),
    ("extensions-update-indirect.pdf", INDETERMINATE, Sub.NO_CERTIFICATE_CHAIN_FOUND),
    ("form-tree-circular-ref-input.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("form-update-ap-indirect-sneaky-trailer.pdf", FAILED, Sub.HASH_FAILURE),
    ("form-update-no-override-appearance-stream-ap-indirect-sneaky.pdf", FAILED, Sub.HASH_FAILURE),
    ("form-update-no-override-appearance-stream-ap-indirect.pdf", PASSED, None),
    ("form-update-original-ap-type-wrong.pdf", PASSED, None),
    ("form-update-override-appearance-stream-ap-indirect-sneaky.pdf", FAILED, Sub.HASH_FAILURE),
    ("form-update-override-appearance-stream-ap-indirect.pdf", PASSED, None),
    ("form-update-override-appearance-stream-sneaky.pdf", FAILED, Sub.HASH_FAILURE),
    ("form-update-override-appearance-stream.pdf", PASSED, None),
    ("malformed-encrypt-dict1.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("malformed-encrypt-dict2.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("minimal-aes256-malformed-oe.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("minimal-aes256-malformed-perms.pdf", FAILED, Sub.FORMAT_FAILURE),
    ("minimal-signed-twice-both-created.pdf", INDETERMINATE, Sub.CHAIN_CONSTRAINTS_FAILURE),
    ("minimal-signed-twice-no-sig-type.pdf", INDETERMINATE, Sub.NO_CERTIFICATE_CHAIN_FOUND),
    ("minimal-signed-twice-second-created.pdf", INDETERMINATE, Sub.CHAIN_CONSTRAINTS_FAILURE),
    ("minimal-two-fields-signed-twice.pdf", INDETERMINATE, Sub.CHAIN_CONSTRAINTS_FAILURE),
    ("pades-lta-dss-indirect-arrs-test-2.pdf", PASSED, None),
    ("pades-lta-dss-indirect-arrs-test.pdf", PASSED, None),
    ("pades-with-old-style-signing-cert-attr-issser.pdf", PASSED, None),
    ("pades-with-old-style-signing-cert-attr.pdf", PASSED, None),
    ("pdf-sig-with-econtent.pdf", INDETERMINATE, Sub.FORMAT_FAILURE),
    ("separate-annots-kids-indir.pdf", PASSED, None),
    ("sig-no-signed-attrs.pdf", PASSED, None),
    ("sig-with-ski-sid.pdf", PASSED, None),
]
NOT_VERIFIABLE = ("the document is not signed", "encrypted", "cannot be parsed", "could not be")


@cache
def engine() -> TrustEngine:
    root = SAMPLES / "crypto" / "testing-ca" / "root" / "root.cert.pem"
    anchor = x509.load_pem_x509_certificate(root.read_bytes())
    return TrustEngine(
        TrustPolicy(anchors=(anchor,), revocation=RevocationPolicy.SOFT, allow_fetching=False)
    )


def verify(name: str) -> DocumentReport:
    path = PDF / name
    if not path.is_file():
        pytest.skip(f"conformance data {PDF} is not available")
    return verify_pdf(path.read_bytes(), engine(), path=name, at=AT_OVERRIDE.get(name, AT))


def all_samples() -> list[str]:
    if not PDF.is_dir():
        return []
    return sorted(str(p.relative_to(PDF)) for p in PDF.rglob("*.pdf"))


@pytest.mark.parametrize(("name", "indication", "sub"), SIGNED, ids=[s[0] for s in SIGNED])
def test_signed_sample(name: str, indication: Indication, sub: Sub | None) -> None:
    verdict = verify(name).verdict
    assert (verdict.indication, verdict.subindication) == (indication, sub), verdict.reason


UNSIGNED = [n for n in all_samples() if n not in {s[0] for s in SIGNED}]


@pytest.mark.skipif(not PDF.is_dir(), reason=f"conformance data {PDF} is not available")
@pytest.mark.parametrize("name", UNSIGNED)
def test_unsigned_encrypted_or_broken_sample_fails_without_a_traceback(name: str) -> None:
    verdict = verify(name).verdict
    assert (verdict.indication, verdict.subindication) == (FAILED, Sub.FORMAT_FAILURE)
    assert any(fragment in verdict.reason for fragment in NOT_VERIFIABLE), verdict.reason


SNEAKY = [s[0] for s in SIGNED if s[0].startswith("form-update-") and "sneaky" in s[0]]
FORM_UPDATES = [s[0] for s in SIGNED if s[0].startswith("form-update-") and "sneaky" not in s[0]]


@pytest.mark.parametrize("name", SNEAKY)
def test_sneaky_form_update_is_a_disallowed_modification(name: str) -> None:
    report = verify(name)
    assert report.verdict.subindication is Sub.HASH_FAILURE
    assert MODIFIED in report.verdict.reason
    assert report.signatures[0].details["changes_permitted"] is False


@pytest.mark.parametrize("name", FORM_UPDATES)
def test_form_update_is_form_filling_of_a_signature_field_only(name: str) -> None:
    """pyHanko says FORM_FILLING; the only field filled is the second signature's."""
    first = verify(name).signatures[0]
    assert first.details["modification_level"] == "FORM_FILLING"
    assert first.details["changed_fields"] == ["Sig2"]
    assert first.details["changes_permitted"] is True


COVERAGE = [s[0] for s in SIGNED if s[0].startswith("coverage-anomalies/") and "base" not in s[0]]


@pytest.mark.parametrize("name", COVERAGE)
def test_coverage_anomaly_does_not_cover_the_whole_file(name: str) -> None:
    report = verify(name)
    assert "does not cover the whole revision it belongs to" in report.verdict.reason
    assert report.signatures[0].details["covers"] != "the whole file"


@pytest.mark.skipif(not PDF.is_dir(), reason=f"conformance data {PDF} is not available")
def test_encrypted_samples_are_refused_and_say_so() -> None:
    encrypted = [n for n in UNSIGNED if "encrypted" in verify(n).verdict.reason]
    assert len(encrypted) >= 10, encrypted
