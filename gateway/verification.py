"""Verifying documents as a clerk or the intake sees them: kind by content, policy by kind.

An XML document whose root is a Rogatory envelope is held to the envelope
policy (one signature over the whole envelope) and its *signed* content must
pass the schema and the profile rules; any other XML document is verified as
general XML-DSig/XAdES.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from signing.errors import XMLInputError
from signing.trust import RevocationPolicy, TrustEngine, TrustPolicy, load_anchors
from signing.verdict import DocumentReport, SubIndication, Verdict
from signing.xml_document import ENVELOPE_POLICY, GENERAL_POLICY, verify_xml
from signing.xmlparse import ParsedXml, parse_xml

if TYPE_CHECKING:
    from .envelope import Envelope, Problem

ENVELOPE_TAG = "{urn:rogatory:envelope:1}Envelope"
DOCUMENT_SUFFIXES = {".xml", ".pdf"}


def sniff_kind(data: bytes) -> str:
    """``pdf`` or ``xml``, by content rather than by file name.

    XML starts with ``<`` (after a byte-order mark and blanks); a PDF header may
    sit anywhere in the first KiB, as readers accept. Anything else is read as
    XML and fails there, with the parser's reason.
    """
    start = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if start.startswith(b"<") or data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "xml"
    return "pdf" if b"%PDF-" in data[:1024] else "xml"


def build_engine(
    trust: Iterable[Path],
    *,
    revocation: RevocationPolicy = RevocationPolicy.HARD,
    allow_fetching: bool = True,
) -> TrustEngine | None:
    """The trust engine for these anchors, or None when none were given."""
    paths = list(trust)
    if not paths:
        return None
    policy = TrustPolicy(
        anchors=load_anchors(paths), revocation=revocation, allow_fetching=allow_fetching
    )
    return TrustEngine(policy)


def _is_envelope(data: bytes) -> bool:
    try:
        return bool(parse_xml(data).tag == ENVELOPE_TAG)
    except XMLInputError:
        return False


def verify_document(
    data: bytes, engine: TrustEngine | None, *, path: str = "-", at: datetime | None = None
) -> DocumentReport:
    """The verdict on one document's bytes; never raises for what the bytes contain."""
    try:
        return _verify_document(data, engine, path, at)
    except Exception as exc:  # fail closed: report, never a traceback, never a pass
        failure = Verdict.failed(
            SubIndication.FORMAT_FAILURE,
            f"the document could not be verified ({type(exc).__name__}: {exc})",
        )
        return DocumentReport.from_signatures(path, sniff_kind(data), [], document_failure=failure)


def _verify_document(
    data: bytes, engine: TrustEngine | None, path: str, at: datetime | None
) -> DocumentReport:
    if sniff_kind(data) == "pdf":
        from signing.pades_verify import verify_pdf

        return verify_pdf(data, engine, path=path, at=at)
    if not _is_envelope(data):
        return verify_xml(data, engine, path=path, at=at, policy=GENERAL_POLICY).report
    return verify_envelope(data, engine, path=path, at=at)


def verify_envelope(
    data: bytes, engine: TrustEngine | None, *, path: str = "-", at: datetime | None = None
) -> DocumentReport:
    """An envelope: the strict signature policy, then schema and profile on the signed content."""
    return _verify_envelope(data, engine, path, at).report


@dataclass(frozen=True)
class VerifiedEnvelope:
    """What the intake needs from an envelope's verification, read from the signed content only."""

    report: DocumentReport
    # The parsed canonical signed document, when the signature covers the whole envelope.
    signed_root: Any | None
    # Read from the signed document, only when the report passed.
    envelope: Envelope | None
    # The certificate of the envelope's one signature, when it was found.
    signing_cert: x509.Certificate | None
    # Schema and profile problems of the signed document, each with its element path.
    problems: tuple[Problem, ...] = ()


def verify_envelope_for_intake(
    data: bytes | ParsedXml,
    engine: TrustEngine | None,
    *,
    path: str = "-",
    at: datetime | None = None,
) -> VerifiedEnvelope:
    """Like ``verify_envelope``, plus the signed root, the Envelope and the signer's certificate.

    ``data`` may be the intake's one parse of the bytes received (``parse_document``).
    """
    return _verify_envelope(data, engine, path, at)


def _verify_envelope(
    data: bytes | ParsedXml, engine: TrustEngine | None, path: str, at: datetime | None
) -> VerifiedEnvelope:
    from .envelope import Envelope, EnvelopeError, validate_envelope

    verified = verify_xml(data, engine, path=path, at=at, policy=ENVELOPE_POLICY)
    report = verified.report
    cert = verified.signing_cert
    if verified.signed_document is None or report.verdict.indication.value == "TOTAL-FAILED":
        return VerifiedEnvelope(report, None, None, cert)
    root = None
    problems: list[Problem] = []
    try:
        root = parse_xml(verified.signed_document)
        problems = validate_envelope(root)
        if not problems and report.verdict.ok:
            return VerifiedEnvelope(report, root, Envelope.from_xml(root), cert)
    except XMLInputError as exc:
        failure = Verdict.failed(
            SubIndication.FORMAT_FAILURE, f"the signed envelope cannot be read: {exc}"
        )
    except EnvelopeError as exc:
        problems = exc.problems
        failure = Verdict.failed(SubIndication.FORMAT_FAILURE, str(exc))
    else:
        if not problems:
            return VerifiedEnvelope(report, root, None, cert)
        listed = "; ".join(f"{p.path}: {p.message}" for p in problems[:10])
        failure = Verdict.failed(
            SubIndication.FORMAT_FAILURE,
            f"the signed envelope breaks {len(problems)} rule(s): {listed}",
        )
    report = DocumentReport.from_signatures(
        path, "xml", report.signatures, document_failure=failure, warnings=report.warnings
    )
    return VerifiedEnvelope(report, root, None, cert, tuple(problems))


@dataclass(frozen=True)
class Unreadable:
    path: str
    reason: str


def expand_paths(paths: Iterable[Path]) -> Iterator[Path | Unreadable]:
    """Files as given, folders as the documents in them (recursively, sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
            )
        elif path.exists() or str(path) == "-":
            yield path
        else:
            yield Unreadable(str(path), "no such file or folder")
