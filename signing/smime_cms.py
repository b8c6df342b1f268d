"""S/MIME's CMS signature: parse a signed-data structure and judge it (signing.smime).

One signer only, its digest and signature algorithm among ``ACCEPTED_DIGESTS``;
the digest must match the signed content and the signature value verify with
the signer's certificate. That certificate is judged with the trust engine
alone (certificates in the message are only candidates for building its
path), its key must be strong enough, and an extended key usage, when there
is one, must allow e-mail protection. Every refusal is a ``Refused`` carrying
its verdict; the content is handed back only when the signature passed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import cms
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from .trust import KeyPurpose, TrustEngine, describe
from .verdict import SignatureReport, SubIndication, Verdict, worst
from .xmldsig import key_strength

ACCEPTED_DIGESTS = ("sha256", "sha384", "sha512")
_EMAIL_USAGES = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}


@dataclass(frozen=True)
class VerifiedSmime:
    """The verdict on an S/MIME signature and, only when it passed, what was signed.

    ``content`` is the signed MIME entity in canonical form (CRLF), exactly the
    bytes the signature's digest covers; never the unsigned outer headers.
    """

    report: SignatureReport
    content: bytes | None = None
    signer: x509.Certificate | None = None

    @property
    def verdict(self) -> Verdict:
        return self.report.verdict

    @property
    def ok(self) -> bool:
        return self.report.verdict.ok


class Refused(Exception):
    """Verification stops here with this verdict."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


def format_failure(reason: str) -> Refused:
    """Refused: the message or its signature is not in a form we can read."""
    return Refused(Verdict.failed(SubIndication.FORMAT_FAILURE, reason))


def verify_signed_data(
    content: bytes | None, cms_der: bytes, form: str, engine: TrustEngine
) -> VerifiedSmime:
    """The verdict on one CMS signed-data signature over ``content``, or over the content
    it holds itself when ``content`` is None; ``form`` names the message format in the report."""
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation.generic_cms import (
        extract_certs_for_validation,
        validate_sig_integrity,
    )

    try:
        info = cms.ContentInfo.load(cms_der, strict=True)
        if info["content_type"].native != "signed_data":
            raise format_failure(
                f"the CMS structure is {info['content_type'].native}, not signed-data"
            )
        signed_data = info["content"]
        signer_infos = signed_data["signer_infos"]
        encap = signed_data["encap_content_info"]
    except (ValueError, TypeError, KeyError) as exc:
        raise format_failure(f"the CMS signature cannot be parsed: {exc}") from None
    if len(signer_infos) != 1:
        raise format_failure(
            f"the message has {len(signer_infos)} signers; exactly one is accepted"
        )
    if encap["content_type"].native != "data":
        raise format_failure(f"the signed content type is {encap['content_type'].native}, not data")
    embedded = encap["content"].native
    if content is not None and embedded is not None:
        raise format_failure("a detached signature that also embeds content")
    if content is None:
        if embedded is None:
            raise format_failure("opaque signed-data without content")
        content = bytes(embedded)
    signer_info = signer_infos[0]
    _refuse_weak(signer_info)
    digest_algo: str = signer_info["digest_algorithm"]["algorithm"].native

    try:
        certs = extract_certs_for_validation(signed_data)
    except SignatureValidationError as exc:
        raise Refused(
            Verdict.indeterminate(
                SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
                f"the signer's certificate is not among the message's certificates: {exc}",
            )
        ) from None
    try:
        intact, valid = validate_sig_integrity(
            signer_info, certs.signer_cert, "data", hashlib.new(digest_algo, content).digest()
        )
    except SignatureValidationError as exc:
        raise format_failure(f"the signature cannot be checked: {exc}") from None
    if not intact:
        raise Refused(
            Verdict.failed(
                SubIndication.HASH_FAILURE,
                "the signed content was changed after signing (its digest does not match)",
            )
        )
    if not valid:
        raise Refused(
            Verdict.failed(
                SubIndication.SIG_CRYPTO_FAILURE,
                "the signature value does not verify with the signer's certificate",
            )
        )
    signer = x509.load_der_x509_certificate(certs.signer_cert.dump())
    others = [x509.load_der_x509_certificate(c.dump()) for c in certs.other_certs]
    return _judge_signer(content, signer, others, signer_info, form, engine)


def _refuse_weak(signer_info: Any) -> None:
    digest_algo = signer_info["digest_algorithm"]["algorithm"].native
    try:
        signature_hash: str | None = signer_info["signature_algorithm"].hash_algo
    except ValueError:  # rsaEncryption names no hash: the digest algorithm applies
        signature_hash = None
    for algo in (digest_algo, signature_hash):
        if algo is not None and algo not in ACCEPTED_DIGESTS:
            weak = algo in ("md5", "sha1", "md2", "sha224")
            raise Refused(
                Verdict.indeterminate(
                    SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE,
                    f"the signature relies on {algo.upper()}, which is "
                    + ("no longer accepted" if weak else "not supported")
                    + f"; accepted: {', '.join(a.upper() for a in ACCEPTED_DIGESTS)}",
                )
            )


def _judge_signer(
    content: bytes,
    signer: x509.Certificate,
    others: list[x509.Certificate],
    signer_info: Any,
    form: str,
    engine: TrustEngine,
) -> VerifiedSmime:
    verdicts: list[Verdict] = []
    strength = key_strength(signer.public_key())
    if not strength.ok:
        verdicts.append(
            Verdict.indeterminate(SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE, strength.reason)
        )
    purpose = _email_purpose(signer)
    if purpose is not None:
        verdicts.append(Verdict.indeterminate(SubIndication.CHAIN_CONSTRAINTS_FAILURE, purpose))
    result = engine.validate(signer, others, purpose=KeyPurpose.SIGNING)
    verdicts.append(result.verdict)
    verdict = worst(v for v in verdicts if not v.ok) or Verdict.passed("S/MIME signature valid")
    report = SignatureReport(
        verdict=verdict,
        signer=describe(signer),
        signing_time=_signing_time(signer_info),
        signing_time_source="claimed",
        chain=result.chain_names,
        revocation=result.revocation,
        warnings=result.warnings,
        details={
            "format": form,
            "digest": signer_info["digest_algorithm"]["algorithm"].native,
        },
    )
    return VerifiedSmime(report, content if verdict.ok else None, signer)


def _email_purpose(cert: x509.Certificate) -> str | None:
    """RFC 8550 4.4.4: an extended key usage, when present, must allow e-mail protection."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if _EMAIL_USAGES & set(eku):
        return None
    return "the signer's certificate is not for e-mail (its extKeyUsage lacks emailProtection)"


def _signing_time(signer_info: Any) -> datetime | None:
    attrs = signer_info["signed_attrs"]
    for attr in attrs if attrs.native is not None else ():
        if attr["type"].native == "signing_time":
            when: datetime = attr["values"][0].native
            return when
    return None
