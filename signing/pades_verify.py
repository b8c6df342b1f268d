"""Verification of signed PDFs (PAdES, ETSI EN 319 142-1) received from other parties.

`verify_pdf` reads the document with pyHanko, validates every signature and
document time-stamp with the trust engine's validation context (one trust
engine for XML and PDF), and judges the changes made after each signature by
the policy for received documents (`pades_policy`). Each signature yields a
`SignatureReport`; the document's verdict is the worst of them.

Fail closed: a document that is not a PDF, cannot be parsed, is encrypted,
or makes a library raise is TOTAL-FAILED with a reason, never a traceback.
A failure outranks an indeterminate result, so a manipulated document is
TOTAL-FAILED even when its signer is also untrusted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import MDPPerm, enumerate_sig_fields
from pyhanko.sign.validation import (
    EmbeddedPdfSignature,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError, SignatureValidationError
from pyhanko.sign.validation.pdf_embedded import read_certification_data
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import (
    DocumentTimestampStatus,
    PdfSignatureStatus,
)
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.path import ValidationPath

from .pades_changes import revision_changes
from .pades_policy import (
    DOCMDP_MEANING,
    describe_coverage,
    diff_policy,
    form_filling_permitted,
    judge_changes,
)
from .pades_status import revocation_text, signer_name, trust_verdict
from .trust import TrustEngine
from .verdict import DocumentReport, SignatureReport, SubIndication, Verdict, worst

__all__ = ["verify_pdf"]

PADES_SUBFILTER = "/ETSI.CAdES.detached"
DOC_TIMESTAMP = "/DocTimeStamp"
# The XML side accepts either key usage; PAdES signers often set only digitalSignature.
_KEY_USAGE = KeyUsageConstraints(
    key_usage={"digital_signature", "non_repudiation"}, match_all_key_usages=False
)
_PDF_HEADER_WINDOW = 1024  # ISO 32000-2, 7.5.2: readers tolerate leading bytes


def verify_pdf(
    data: bytes, engine: TrustEngine | None, *, path: str = "-", at: datetime | None = None
) -> DocumentReport:
    """Verify every signature and document time-stamp in a PDF (kind ``"pdf"``)."""
    try:
        return _verify(data, engine, path, at)
    except Exception as exc:  # fail closed: a library error is a verdict, never a traceback
        return _document_failure(path, f"the PDF could not be verified: {_error(exc)}")


def _document_failure(path: str, reason: str) -> DocumentReport:
    return DocumentReport.from_signatures(
        path, "pdf", (), document_failure=Verdict.failed(SubIndication.FORMAT_FAILURE, reason)
    )


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@dataclass(frozen=True)
class _Document:
    """What every signature of one document is judged against."""

    reader: PdfFileReader
    docmdp: MDPPerm | None
    dss_revinfo: bool
    context: ValidationContext
    trusted: bool  # False without a trust engine: integrity only


def _verify(
    data: bytes, engine: TrustEngine | None, path: str, at: datetime | None
) -> DocumentReport:
    if b"%PDF-" not in data[:_PDF_HEADER_WINDOW]:
        return _document_failure(path, "the file is not a PDF (no %PDF- header)")
    try:
        reader = PdfFileReader(BytesIO(data), strict=True)
    except Exception as exc:
        return _document_failure(path, f"the PDF cannot be parsed: {_error(exc)}")
    if reader.encrypted:
        return _document_failure(
            path, "the PDF is encrypted; Rogatory does not verify encrypted documents"
        )
    logging.getLogger("pyhanko").setLevel(logging.ERROR)  # its warnings repeat our verdicts
    certification = read_certification_data(reader)
    docmdp = certification.permission if certification is not None else None
    certs, crls, ocsps = _dss(reader)
    if engine is not None:
        context = engine.validation_context(at, certs, crls=crls, ocsps=ocsps)
    else:
        context = ValidationContext(trust_roots=[], moment=at, allow_fetching=False)
    document = _Document(reader, docmdp, bool(crls or ocsps), context, engine is not None)
    fields = list(enumerate_sig_fields(reader, filled_status=True))
    if not fields:
        return DocumentReport.from_signatures(path, "pdf", ())
    reports = asyncio.run(_check_all(document, fields))
    warnings = []
    if docmdp is not None:
        meaning = DOCMDP_MEANING.get(docmdp.value, "unknown permissions")
        warnings.append(f"the document is certified with DocMDP P={docmdp.value} ({meaning})")
    return DocumentReport.from_signatures(path, "pdf", reports, warnings=warnings)


def _dss(reader: PdfFileReader) -> tuple[list[x509.Certificate], list[bytes], list[bytes]]:
    """Certificates, CRLs and OCSP responses from the document security store."""
    try:
        dss = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        return [], [], []
    certs = [x509.load_der_x509_certificate(c.dump()) for c in dss.load_certs()]
    crls = [ref.get_object().data for ref in dss.crls]
    ocsps = [ref.get_object().data for ref in dss.ocsps]
    return certs, crls, ocsps


async def _check_all(
    document: _Document, fields: list[tuple[str, Any, Any]]
) -> list[SignatureReport]:
    signatures: list[tuple[str, EmbeddedPdfSignature | None, SignatureReport | None]] = []
    for name, _value, field in fields:
        try:
            signatures.append((name, EmbeddedPdfSignature(document.reader, field, name), None))
        except Exception as exc:
            reason = f"signature {name!r} cannot be read: {_error(exc)}"
            failed = Verdict.failed(SubIndication.FORMAT_FAILURE, reason)
            signatures.append((name, None, SignatureReport(failed, details={"field": name})))
    signatures.sort(key=lambda s: s[1].signed_revision if s[1] is not None else -1)
    timestamp_revisions = [
        e.signed_revision for _, e, _ in signatures if e is not None and _is_timestamp(e)
    ]
    reports = []
    for name, embedded, broken in signatures:
        if embedded is None:
            assert broken is not None
            reports.append(broken)
            continue
        try:
            reports.append(await _check(document, name, embedded, timestamp_revisions))
        except Exception as exc:  # fail closed on anything pyHanko raises
            reason = f"signature {name!r} could not be validated: {_error(exc)}"
            sub = SubIndication.FORMAT_FAILURE
            reports.append(SignatureReport(Verdict.failed(sub, reason), details={"field": name}))
    return reports


def _is_timestamp(embedded: EmbeddedPdfSignature) -> bool:
    return str(embedded.sig_object_type) == DOC_TIMESTAMP


async def _check(
    document: _Document, name: str, embedded: EmbeddedPdfSignature, timestamps: list[int]
) -> SignatureReport:
    reader = document.reader
    subfilter = str(embedded.sig_object.get("/SubFilter", ""))
    policy = diff_policy(form_filling=form_filling_permitted(document.docmdp))
    status: PdfSignatureStatus | DocumentTimestampStatus
    timestamp = _is_timestamp(embedded)
    try:
        if timestamp:
            status = await async_validate_pdf_timestamp(embedded, document.context, policy)
        else:
            status = await async_validate_pdf_signature(
                embedded,
                document.context,
                document.context,
                diff_policy=policy,
                key_usage_settings=_KEY_USAGE,
            )
    except SignatureValidationError as exc:
        return _unsupported(name, subfilter, exc)
    revision = embedded.signed_revision
    total = reader.xrefs.total_revisions
    covers, coverage_failure = describe_coverage(status.coverage, revision, total)
    changes = revision_changes(reader, revision) if revision + 1 < total else []
    judgment = judge_changes(
        status.diff_result if coverage_failure is None else None,
        docmdp=document.docmdp,
        changes=changes,
    )
    verdicts: list[Verdict | None] = [coverage_failure]
    if not status.intact:
        verdicts.append(
            Verdict.failed(
                SubIndication.HASH_FAILURE,
                "the signed bytes do not match the digest in the signature",
            )
        )
    elif not status.valid:
        verdicts.append(
            Verdict.failed(SubIndication.SIG_CRYPTO_FAILURE, "the signature value does not verify")
        )
    verdicts.append(judgment.verdict)
    if status.intact and status.valid:
        verdicts.append(
            trust_verdict(status, document.trusted, "time-stamping" if timestamp else None)
        )
    level: str | None
    signing_time: datetime | None
    if isinstance(status, DocumentTimestampStatus):
        signing_time, source, level = status.timestamp, "timestamp", "document time-stamp"
    else:
        verdicts.extend(_timestamp_verdicts(status))
        if status.seed_value_constraint_error is not None:
            verdicts.append(
                Verdict.indeterminate(
                    SubIndication.SIG_CONSTRAINTS_FAILURE,
                    f"the signature field's seed values are not met: "
                    f"{status.seed_value_constraint_error.failure_message}",
                )
            )
        signing_time, source = _signing_time(status)
        level = _level(subfilter, status, document.dss_revinfo, revision, timestamps)
    verdict = worst(v for v in verdicts if v is not None and not v.ok) or Verdict.passed(
        "document time-stamp valid" if timestamp else "signature valid"
    )
    details: dict[str, Any] = {
        "field": name,
        "type": "document time-stamp" if timestamp else "signature",
        "subfilter": subfilter.lstrip("/") or None,
        "covers": covers,
        "revision": revision + 1,
        "revisions": total,
        "changes": [str(c) for c in changes],
        "modification_level": judgment.level,
        "changes_permitted": judgment.permitted,
        "changed_fields": list(judgment.changed_fields),
        "docmdp": document.docmdp.value if document.docmdp is not None else None,
    }
    if judgment.reasons:
        details["change_reasons"] = list(judgment.reasons)
    return SignatureReport(
        verdict=verdict,
        signer=signer_name(status.signing_cert),
        signing_time=signing_time,
        signing_time_source=source if signing_time is not None else None,
        level=level,
        chain=_chain(status.validation_path),
        revocation=revocation_text(status, document.trusted),
        details=details,
    )


def _chain(path: ValidationPath | None) -> tuple[str, ...]:
    """The names along the path, trust anchor first (as the trust engine reports them)."""
    if path is None:
        return ()
    return tuple(signer_name(c) or "?" for c in path.iter_certs(include_root=True))


def _unsupported(name: str, subfilter: str, exc: SignatureValidationError) -> SignatureReport:
    """pyHanko refuses the signature before validating it (e.g. an unknown SubFilter)."""
    reason = f"signature {name!r} cannot be validated: {_error(exc)}"
    verdict = Verdict.indeterminate(SubIndication.FORMAT_FAILURE, reason)
    return SignatureReport(verdict, details={"field": name, "subfilter": subfilter.lstrip("/")})


def _timestamp_verdicts(status: PdfSignatureStatus) -> list[Verdict | None]:
    out: list[Verdict | None] = []
    for what, ts in (
        ("signature time-stamp", status.timestamp_validity),
        ("content time-stamp", status.content_timestamp_validity),
    ):
        if ts is None:
            continue
        if not ts.intact:
            out.append(
                Verdict.failed(SubIndication.HASH_FAILURE, f"the {what} is not over this signature")
            )
        elif not ts.valid:
            out.append(
                Verdict.failed(
                    SubIndication.SIG_CRYPTO_FAILURE, f"the {what}'s signature does not verify"
                )
            )
        else:
            verdict = trust_verdict(ts, True, what)
            out.append(verdict if not verdict.ok else None)
    return out


def _signing_time(status: PdfSignatureStatus) -> tuple[datetime | None, str]:
    ts = status.timestamp_validity
    if ts is not None and ts.intact and ts.valid:
        return ts.timestamp, "timestamp"
    return status.signer_reported_dt, "claimed"


def _level(
    subfilter: str,
    status: PdfSignatureStatus,
    dss_revinfo: bool,
    revision: int,
    timestamps: list[int],
) -> str | None:
    """The PAdES baseline level, as far as the file shows it."""
    if subfilter != PADES_SUBFILTER:
        return f"PDF signature ({subfilter.lstrip('/') or 'no SubFilter'}), not PAdES"
    if status.timestamp_validity is None:
        return "PAdES-B-B"
    if not dss_revinfo:
        return "PAdES-B-T"
    if any(r > revision for r in timestamps):
        return "PAdES-B-LTA"
    return "PAdES-B-LT"
