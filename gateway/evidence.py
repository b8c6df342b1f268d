"""Evidences: what a gateway attests about a message, signed (DESIGN.md, Evidences).

After the ETSI REM evidences (EN 319 522-2) as e-CODEX uses them. An evidence
is plain data (``Evidence``); ``sign_evidence`` writes it as XML valid against
``schemas/evidence-1.xsd`` with an enveloped XAdES signature over the whole
document, and ``read_evidence`` verifies one and reads it back from the signed
octets only. The rules XSD 1.0 cannot say live in ``Evidence.__post_init__``,
so an evidence that breaks them can be neither built nor read.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from lxml import etree

from gateway.envelope import Envelope
from gateway.model import EvidenceType
from gateway.signed_document import (
    DocumentKind,
    SignedDocumentError,
    read_signed,
    xml_time,
)
from schemas import EVIDENCE_NS, evidence_schema_path
from signing.keys import Signer
from signing.timestamp import TimeStamper
from signing.trust import TrustEngine
from signing.verdict import DocumentReport
from signing.xmldsig import Digest

__all__ = [
    "AttachmentDigest",
    "Evidence",
    "EvidenceError",
    "EvidenceReason",
    "GatewayRef",
    "MessageRef",
    "VerifiedEvidence",
    "build_evidence",
    "evidence_xml",
    "read_evidence",
    "sign_evidence",
]

SHA256 = Digest.SHA256.value


class EvidenceError(SignedDocumentError):
    """An evidence that cannot be built, or one received that Rogatory refuses, and why."""


@dataclass(frozen=True)
class EvidenceReason:
    """Why a negative evidence was issued: a machine-readable code and a sentence."""

    code: str
    text: str


@dataclass(frozen=True)
class AttachmentDigest:
    attachment_id: str
    sha256_hex: str


@dataclass(frozen=True)
class MessageRef:
    """The message an evidence speaks of, and the SHA-256 of its envelope bytes as received."""

    sha256_hex: str
    message_id: str | None = None
    conversation_id: str | None = None
    sender_authority: str | None = None
    recipient_authority: str | None = None
    attachments: tuple[AttachmentDigest, ...] = ()

    @classmethod
    def of_envelope(cls, envelope: Envelope, original: bytes) -> MessageRef:
        """A valid envelope: its ids, authorities and manifest digests; ``original`` as received."""
        return cls(
            sha256_hex=hashlib.sha256(original).hexdigest(),
            message_id=envelope.message_id,
            conversation_id=envelope.conversation_id,
            sender_authority=envelope.sender.id,
            recipient_authority=envelope.recipient.id,
            attachments=tuple(AttachmentDigest(a.id, a.sha256_hex) for a in envelope.attachments),
        )

    @classmethod
    def of_stored(cls, message: Any) -> MessageRef:
        """A stored message (gateway.store_records.Message): its ids, authorities, digest."""
        return cls(
            sha256_hex=message.envelope_sha256,
            message_id=message.message_id,
            conversation_id=message.conversation_id,
            sender_authority=message.sender_id,
            recipient_authority=message.recipient_id,
        )

    @classmethod
    def of_bytes(cls, original: bytes, *, sender_authority: str | None = None) -> MessageRef:
        """Bytes too broken to name a message: only their digest (and who posted them)."""
        return cls(hashlib.sha256(original).hexdigest(), sender_authority=sender_authority)


@dataclass(frozen=True)
class GatewayRef:
    """The gateway that issues (and signs) an evidence."""

    id: str
    name: str
    country: str


@dataclass(frozen=True)
class Evidence:
    evidence_id: str
    type: EvidenceType
    event_time: datetime
    message: MessageRef
    issuer: GatewayRef
    reasons: tuple[EvidenceReason, ...] = ()
    details: str | None = None

    def __post_init__(self) -> None:
        # The profile rules of evidence-1.xsd (see its header comment).
        kind = self.type.value
        if self.event_time.utcoffset() is None:
            raise EvidenceError(f"a {kind} evidence needs an event time with a time zone")
        if self.type.negative and not self.reasons:
            raise EvidenceError(f"a {kind} evidence is negative and must give at least one reason")
        if not self.type.negative and self.reasons:
            raise EvidenceError(f"a {kind} evidence is positive and gives no reason")
        if self.type is not EvidenceType.SUBMISSION_REJECTION:
            ref = self.message
            missing = [
                name
                for name, value in (
                    ("MessageId", ref.message_id),
                    ("SenderAuthority", ref.sender_authority),
                    ("RecipientAuthority", ref.recipient_authority),
                )
                if value is None
            ]
            if missing:
                raise EvidenceError(
                    f"a {kind} evidence must name the message's {', '.join(missing)}"
                )


@dataclass(frozen=True)
class VerifiedEvidence:
    evidence: Evidence
    report: DocumentReport
    signing_cert: x509.Certificate | None = None  # whose key signed it (chain validated)


def _now() -> datetime:
    return datetime.now(UTC)


def build_evidence(
    type: EvidenceType,
    message: MessageRef,
    issuer: GatewayRef,
    *,
    reasons: Iterable[EvidenceReason] = (),
    details: str | None = None,
    clock: Callable[[], datetime] = _now,
) -> Evidence:
    """A new evidence (fresh UUID, event time from ``clock``); EvidenceError if it breaks a rule."""
    return Evidence(
        evidence_id=str(uuid.uuid4()),
        type=type,
        event_time=clock(),
        message=message,
        issuer=issuer,
        reasons=tuple(reasons),
        details=details,
    )


# ---- writing ----------------------------------------------------------------

_KIND = DocumentKind("evidence", EVIDENCE_NS, "Evidence", evidence_schema_path, EvidenceError)
_el = _KIND.element
_text = _KIND.text
_required = _KIND.required
_q = _KIND.q

# The evidence namespace as the default one (lxml-stubs do not allow a None prefix).
_NSMAP: Any = {None: EVIDENCE_NS}


def _tree(evidence: Evidence) -> Any:
    root = etree.Element(f"{{{EVIDENCE_NS}}}Evidence", {"version": "1.0"}, nsmap=_NSMAP)
    _el(root, "EvidenceId", evidence.evidence_id)
    _el(root, "EvidenceType", evidence.type.value)
    _el(root, "EventTime", xml_time(evidence.event_time))
    ref = evidence.message
    message = _el(root, "Message")
    for tag, value in (
        ("MessageId", ref.message_id),
        ("ConversationId", ref.conversation_id),
        ("SenderAuthority", ref.sender_authority),
        ("RecipientAuthority", ref.recipient_authority),
    ):
        if value is not None:
            _el(message, tag, value)
    _el(message, "Digest", ref.sha256_hex, Algorithm=SHA256)
    for attachment in ref.attachments:
        _el(
            message,
            "AttachmentDigest",
            attachment.sha256_hex,
            Algorithm=SHA256,
            AttachmentId=attachment.attachment_id,
        )
    issuer = _el(root, "Issuer")
    _el(issuer, "GatewayId", evidence.issuer.id)
    _el(issuer, "Name", evidence.issuer.name)
    _el(issuer, "Country", evidence.issuer.country)
    for reason in evidence.reasons:
        element = _el(root, "Reason")
        _el(element, "Code", reason.code)
        _el(element, "Text", reason.text)
    if evidence.details is not None:
        _el(root, "Details", evidence.details)
    return root


def evidence_xml(evidence: Evidence) -> bytes:
    """The unsigned evidence document (UTF-8), valid against the evidence XSD."""
    return _KIND.serialized(_tree(evidence))


def sign_evidence(
    evidence: Evidence, signer: Signer, *, timestamper: TimeStamper | None = None
) -> bytes:
    """The evidence document with the gateway's XAdES signature: B-B, or B-T with a TSA."""
    return _KIND.signed(_tree(evidence), signer, timestamper=timestamper)


# ---- reading ----------------------------------------------------------------


def read_evidence(
    data: bytes,
    engine: TrustEngine,
    *,
    expect_issuer: str | None = None,
    at: datetime | None = None,
) -> VerifiedEvidence:
    """Verify a signed evidence and read it from what the signature covers.

    EvidenceError unless the signature is TOTAL-PASSED under the envelope
    policy (one signature, over the whole document), the signed document is
    a valid evidence, and (if given) ``expect_issuer`` is its issuing gateway.
    """
    root, verified = read_signed(data, engine, _KIND, expect_issuer=expect_issuer, at=at)
    evidence = _from_xml(root)
    return VerifiedEvidence(evidence, verified.report, verified.signing_cert)


def _from_xml(root: Any) -> Evidence:
    message = root.find(_q("Message"))
    return Evidence(
        evidence_id=_required(root, "EvidenceId"),
        type=EvidenceType(_required(root, "EvidenceType")),
        event_time=datetime.fromisoformat(_required(root, "EventTime")),
        message=MessageRef(
            sha256_hex=_required(message, "Digest"),
            message_id=_text(message, "MessageId"),
            conversation_id=_text(message, "ConversationId"),
            sender_authority=_text(message, "SenderAuthority"),
            recipient_authority=_text(message, "RecipientAuthority"),
            attachments=tuple(
                AttachmentDigest(str(e.get("AttachmentId")), str(e.text))
                for e in message.iterfind(_q("AttachmentDigest"))
            ),
        ),
        issuer=GatewayRef(
            id=_required(root, "Issuer/GatewayId"),
            name=_required(root, "Issuer/Name"),
            country=_required(root, "Issuer/Country"),
        ),
        reasons=tuple(
            EvidenceReason(_required(e, "Code"), _required(e, "Text"))
            for e in root.iterfind(_q("Reason"))
        ),
        details=_text(root, "Details"),
    )
