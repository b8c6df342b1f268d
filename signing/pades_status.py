"""pyHanko's certificate status, in Rogatory's terms: ETSI sub-indications and names.

The mapping follows the XML side (`xades_verify`, `trust`): revoked fails;
an untrusted, expired or misused certificate, or a weak algorithm, is
INDETERMINATE, because more evidence (a trust anchor, a proof of existence)
could change the answer.
"""

from __future__ import annotations

from asn1crypto import x509 as asn1_x509
from pyhanko.sign.ades.report import AdESFailure, AdESIndeterminate, AdESSubIndic
from pyhanko.sign.validation.status import SignatureStatus

from .verdict import SubIndication, Verdict

# pyHanko's sub-indications that have no namesake in Rogatory's table.
_RENAMED: dict[object, SubIndication] = {
    AdESIndeterminate.REVOKED_CA_NO_POE: SubIndication.REVOKED_NO_POE,
    AdESIndeterminate.REVOCATION_OUT_OF_BOUNDS_NO_POE: SubIndication.TRY_LATER,
    AdESIndeterminate.OUT_OF_BOUNDS_NOT_REVOKED: SubIndication.OUT_OF_BOUNDS_NO_POE,
    AdESIndeterminate.NO_POE: SubIndication.OUT_OF_BOUNDS_NO_POE,
    AdESIndeterminate.GENERIC: SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE,
    AdESIndeterminate.EXPIRED: SubIndication.OUT_OF_BOUNDS_NO_POE,
    AdESIndeterminate.NOT_YET_VALID: SubIndication.OUT_OF_BOUNDS_NO_POE,
}

_REASONS = {
    SubIndication.NO_CERTIFICATE_CHAIN_FOUND: "the certificate does not chain to a trust anchor",
    SubIndication.OUT_OF_BOUNDS_NO_POE: "the certificate is expired or not yet valid "
    "at the validation time",
    SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE: "a weak algorithm in the certificate path",
    SubIndication.CRYPTO_CONSTRAINTS_FAILURE: "a weak algorithm in the certificate path",
    SubIndication.CHAIN_CONSTRAINTS_FAILURE: "the certificate's key usage does not allow this use",
    SubIndication.TRY_LATER: "revocation status unavailable",
    SubIndication.REVOKED_NO_POE: "a certificate in the path is revoked",
}


def subindication(indic: AdESSubIndic) -> SubIndication:
    """Rogatory's sub-indication for one of pyHanko's."""
    renamed = _RENAMED.get(indic)
    if renamed is not None:
        return renamed
    try:
        return SubIndication(str(getattr(indic, "name", "")))
    except ValueError:
        return SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE


def signer_name(cert: asn1_x509.Certificate | None) -> str | None:
    """The subject as pyHanko renders it for people, or None."""
    if cert is None:
        return None
    try:
        return str(cert.subject.human_friendly)
    except (ValueError, TypeError, KeyError):
        return f"certificate with an unreadable subject, SHA-256 {cert.sha256.hex()}"


def trust_verdict(status: SignatureStatus, trusted: bool, purpose: str | None = None) -> Verdict:
    """Trust in the signing (or time-stamping) certificate, as a verdict."""
    whose = f"the {purpose} certificate" if purpose else "the signing certificate"
    name = signer_name(status.signing_cert)
    if not trusted:
        return Verdict.indeterminate(
            SubIndication.NO_CERTIFICATE_CHAIN_FOUND, "no trust anchor was given"
        )
    details = status.revocation_details
    if details is not None:
        what = "an issuing CA of " + whose if details.ca_revoked else whose
        return Verdict.failed(
            SubIndication.REVOKED,
            f"{what} ({name}) was revoked on {details.revocation_date:%Y-%m-%d %H:%M:%S %Z}",
        )
    indic = status.trust_problem_indic
    if indic is None and status.validation_path is not None:
        return Verdict.passed("certificate path valid")
    if isinstance(indic, AdESFailure) and indic is AdESFailure.REVOKED:
        return Verdict.failed(SubIndication.REVOKED, f"{whose} ({name}) is revoked")
    sub = subindication(indic) if indic is not None else SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    if isinstance(indic, AdESFailure):
        return Verdict.failed(sub, f"{whose} ({name}): {indic.name}")
    reason = _REASONS.get(sub, "certificate path validation failed")
    return Verdict.indeterminate(sub, f"{reason} ({whose}: {name})")


def revocation_text(status: SignatureStatus, trusted: bool) -> str:
    """The revocation status of the signer's path, in a few words."""
    if status.revocation_details is not None:
        return "revoked"
    if not trusted or status.validation_path is None:
        return "not checked"
    if status.trust_problem_indic is AdESIndeterminate.TRY_LATER:
        return "unavailable"
    certs = list(status.validation_path.iter_certs(include_root=False))
    named = any(c.crl_distribution_points or c.ocsp_urls for c in certs)
    return "good" if named else "no source named"
