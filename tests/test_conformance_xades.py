"""XAdES samples of DSS and the ETSI plugtests (via signxml's tests): integrity verdicts.

``expectations.tsv`` says what signxml's tests expect with the embedded
certificate pinned and the verification time set to the signing time:
``valid``, ``InvalidDigest``, ``InvalidSignature`` or ``InvalidInput``. The
same is done here (every embedded certificate is a trust anchor, nothing is
fetched) and the report's sub-indication is read as integrity. Where
Rogatory decides differently the row asserts Rogatory's decision, listed and
explained in docs/conformance.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from signing.verdict import Indication, SubIndication
from signing.xml_document import VerifiedXml, verify_xml
from tests.conformance import (
    CONFORMANCE,
    claimed_signing_time,
    describe,
    embedded_certificates,
    folder,
    integrity_held,
    offline_engine,
    read_tsv,
)

FOLDER = "xades-samples"
# Some real-world certificates carry an empty name attribute; cryptography warns.
pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
ROWS = read_tsv(CONFORMANCE / FOLDER / "expectations.tsv")


@dataclass(frozen=True)
class Decision:
    """What Rogatory reports on the document, where it differs from upstream."""

    indication: Indication
    subindication: SubIndication | None
    reason: str  # a fragment the document's reason must contain
    why: str


# Rows where Rogatory's verdict differs from upstream's on purpose (docs/conformance.md).
DECISIONS: dict[str, Decision] = {
    "nonconformant-X_BE_CONN_10.xml": Decision(
        Indication.TOTAL_PASSED,
        None,
        "valid",
        "both reference digests and the signature value verify (recomputed by hand); "
        "upstream's InvalidDigest is stale, signxml 5.2 agrees it is valid",
    ),
    "xades-sign-cert-v2-wrong-digest.xml": Decision(
        Indication.TOTAL_FAILED,
        SubIndication.FORMAT_FAILURE,
        "CertDigest is not valid base64",
        "the CertDigest value is '...', not a digest: refused as malformed, not as a mismatch",
    ),
    "xades-wrong-sign-cert-digest.xml": Decision(
        Indication.INDETERMINATE,
        SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
        "SigningCertificate digest",
        "EN 319 102-1 5.2.3: a signing-certificate reference that matches no certificate "
        "is NO_SIGNING_CERTIFICATE_FOUND",
    ),
    "nonconformant-xades-extended-epes-sigPolStore-noDigest.xml": Decision(
        Indication.TOTAL_PASSED,
        None,
        "valid",
        "Rogatory does not evaluate signature policies (EPES); the SignaturePolicyId "
        "without SigPolicyHash is schema-invalid but signed and intact",
    ),
}

# A valid main signature carrying a forged counter-signature.
FORGED_COUNTER_SIGNATURES = {
    "xades-counter-signature-injected.xml",
    "xades-fake-counter-signature.xml",
}

# What the reason must name for an InvalidInput row Rogatory agrees with.
INVALID_INPUT_REASONS = {
    "xades-unsupported-signature-algorithm.xml": "unsupported signature algorithm",
}


def _verify(name: str) -> VerifiedXml:
    data = (folder(FOLDER) / name).read_bytes()
    engine = offline_engine(embedded_certificates(data))
    return verify_xml(data, engine, path=name, at=claimed_signing_time(data))


def _params() -> list[object]:
    params: list[object] = []
    for row in ROWS:
        name = row["file"]
        params.append(pytest.param(name, row["expected_integrity"], id=name))
    return params


def test_expectations_are_read() -> None:
    folder(FOLDER)
    assert len(ROWS) == 58
    assert {r["expected_integrity"] for r in ROWS} == {
        "valid",
        "InvalidSignature",
        "InvalidDigest",
        "InvalidInput",
    }
    assert set(DECISIONS) <= {r["file"] for r in ROWS}


@pytest.mark.parametrize(("name", "expected"), _params())
def test_xades_sample(name: str, expected: str) -> None:
    result = _verify(name)
    report = result.report
    sigs = report.signatures
    assert sigs, f"no signature report: {report.verdict.reason}"
    main = sigs[0]

    if name in DECISIONS:
        decision = DECISIONS[name]
        assert report.verdict.indication is decision.indication, describe(main)
        assert report.verdict.subindication is decision.subindication, describe(main)
        assert decision.reason in report.verdict.reason
        return

    if name in FORGED_COUNTER_SIGNATURES:
        assert expected == "valid"
        assert main.verdict.ok, describe(main)
        assert not report.verdict.ok
        counter = sigs[1:]
        assert counter and all(
            s.verdict.subindication is SubIndication.FORMAT_FAILURE
            and "counter-signature does not sign the SignatureValue" in s.verdict.reason
            for s in counter
        ), [describe(s) for s in counter]
        return

    if expected == "valid":
        broken = [describe(s) for s in sigs if not integrity_held(s)]
        assert not broken, broken
    elif expected == "InvalidDigest":
        assert any(s.verdict.subindication is SubIndication.HASH_FAILURE for s in sigs)
        assert report.verdict.indication is Indication.TOTAL_FAILED
    elif expected == "InvalidSignature":
        assert main.verdict.subindication in {
            SubIndication.SIG_CRYPTO_FAILURE,
            SubIndication.HASH_FAILURE,
        }, describe(main)
        assert report.verdict.indication is Indication.TOTAL_FAILED
    elif expected == "InvalidInput":
        assert not report.verdict.ok
        assert main.verdict.subindication is SubIndication.FORMAT_FAILURE, describe(main)
        assert INVALID_INPUT_REASONS[name] in main.verdict.reason
    else:  # pragma: no cover - a new verdict in the data
        pytest.fail(f"unknown expectation {expected!r}")
