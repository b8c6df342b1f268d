"""What the intake knows of a submission, and what it records and answers from it.

``Submission`` is filled in step by step by ``gateway.intake``; the functions
here turn it into the store's records, the message reference an evidence
speaks of, and the answer sent back (also when replaying a stored one).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from gateway.audit import JSON, AuditEvent
from gateway.authorities import Authority
from gateway.blobs import BlobRef
from gateway.envelope import Envelope
from gateway.evidence import GatewayRef, MessageRef
from gateway.intake_checks import Refused, manifest_key, problem_json
from gateway.model import Direction
from gateway.settings import Settings
from gateway.store_records import Answer as StoredAnswer
from gateway.store_records import AttachmentRecord, MessageRecord

PROBLEM_JSON = "application/problem+json"
_AUTHORITY_ID = re.compile(r"^[A-Z]{2}-[A-Za-z0-9][A-Za-z0-9._\-]{0,62}$")


@dataclass(frozen=True)
class Answer:
    """What the HTTP layer sends back: status, media type, body and extra headers."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def message_location(message_id: str) -> str:
    return f"/api/v1/messages/{message_id}"


@dataclass(frozen=True)
class Origin:
    """Who handed us a message from outside: a peer gateway, or a channel we poll.

    ``principal`` is recorded as the submission's authority id (a replay from
    the same origin gets the first answer). A peer gateway may bring messages
    from the authorities the directory says it serves; a pull channel vouches
    for exactly one authority (``vouched_sender``).
    """

    principal: str  # "gateway:gw-es", "email:ES-MJ", "sftp:ES-MJ"
    kind: str  # the channel kind it came by
    gateway: str | None = None
    vouched_sender: str | None = None

    def stand_in(self) -> Authority:
        """The origin as the submission's "authority": only its id is ever read."""
        return Authority(id=self.principal, country="ZZ", name=self.principal)


@dataclass
class Submission:
    """What is known of one submission so far, filled in as the pipeline goes."""

    authority: Authority
    origin: Origin | None = None  # set for a message arriving from outside
    submission_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    envelope_bytes: bytes | None = None
    envelope_sha256: str | None = None
    message_id: str | None = None  # peeked from the unsigned envelope
    envelope: Envelope | None = None  # read from the signed envelope, once verified
    verdict: dict[str, JSON] | None = None
    received: dict[str, BlobRef] = field(default_factory=dict)
    arrived_via: str | None = None  # inbound: the sender's channel it came by (routing key)
    route: str | None = None  # outbound: the routing decision, as JSON
    override: str | None = None  # outbound: the channel kind the sender asked for
    # Small blobs (digest -> bytes) to write with the submission's record, in its transaction.
    staged: dict[str, bytes] = field(default_factory=dict)


def issuer_from(settings: Settings) -> GatewayRef:
    gateway_id = settings.gateway_id or "rogatory"
    return GatewayRef(
        id=gateway_id,
        name=settings.gateway_name or gateway_id,
        country=settings.gateway_country or "ZZ",
    )


def rejected_ref(submission: Submission) -> MessageRef:
    """What a rejection speaks of: the verified envelope, else the bytes and any peeked id."""
    data = submission.envelope_bytes or b""
    if submission.envelope is not None:
        return MessageRef.of_envelope(submission.envelope, data)
    sender = submission.authority.id
    ref = MessageRef.of_bytes(
        data, sender_authority=sender if _AUTHORITY_ID.match(sender) else None
    )
    if submission.message_id is None:
        return ref
    return MessageRef(ref.sha256_hex, submission.message_id, None, ref.sender_authority)


def message_record(submission: Submission, envelope: Envelope) -> MessageRecord:
    assert submission.envelope_sha256 is not None
    return MessageRecord(
        message_id=envelope.message_id,
        direction=Direction.OUTBOUND if submission.origin is None else Direction.INBOUND,
        sender_id=envelope.sender.id,
        recipient_id=envelope.recipient.id,
        kind=envelope.kind.value,
        envelope_sha256=submission.envelope_sha256,
        conversation_id=envelope.conversation_id,
        request_type=envelope.request_type.value,
        legal_basis="; ".join(
            b.instrument + (f" art. {b.article}" if b.article else "") for b in envelope.legal_basis
        ),
        verdict=submission.verdict,
        in_reply_to=envelope.in_reply_to,
        arrived_via=submission.arrived_via,
        route=submission.route,
    )


def attachment_records(submission: Submission, envelope: Envelope) -> tuple[AttachmentRecord, ...]:
    """The parts that arrived, described by the manifest where it lists them."""
    listed = {manifest_key(ref): ref for ref in envelope.attachments}
    records = []
    for content_id, blob in submission.received.items():
        ref = listed.get(content_id)
        records.append(
            AttachmentRecord(
                content_id=content_id,
                media_type=ref.media_type if ref else "application/octet-stream",
                size=blob.size,
                sha256=blob.sha256,
                file_name=ref.file_name if ref else None,
            )
        )
    return tuple(records)


def received_records(submission: Submission) -> tuple[AttachmentRecord, ...]:
    """The parts that arrived, as received (no manifest to describe them)."""
    return tuple(
        AttachmentRecord(content_id, "application/octet-stream", blob.size, blob.sha256)
        for content_id, blob in submission.received.items()
    )


def from_stored(stored: StoredAnswer, message_id: str | None) -> Answer:
    """A recorded answer as sent the first time (the Location of an acceptance rebuilt)."""
    headers = {}
    if stored.http_status == 202 and message_id is not None:
        headers["Location"] = message_location(message_id)
    return Answer(stored.http_status, stored.media_type, stored.body, headers)


def conflict_event(submission: Submission, first_sha256: str, first_submission: str) -> AuditEvent:
    return AuditEvent(
        "submission.conflict",
        submission.authority.id,
        submission.message_id,
        {
            "submission_id": submission.submission_id,
            "envelope_sha256": submission.envelope_sha256,
            "first_submission_id": first_submission,
            "first_envelope_sha256": first_sha256,
            "reason": "message id already used with different content",
        },
    )


def bare_problem(refusal: Refused, submission: Submission) -> Answer:
    """A problem+json answer without evidence, when not even a rejection could be signed."""
    body = problem_json(
        refusal, None, message_id=submission.message_id, submission_id=submission.submission_id
    )
    return Answer(refusal.status, PROBLEM_JSON, body)
