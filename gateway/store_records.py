"""What the message store keeps, as plain frozen records, and the tables that hold them.

Tables (migration ``0002_messages``): ``submissions`` (the first answer to
each submission, for idempotency), ``messages``, ``status_history``,
``attachments`` and ``evidences``. Times are aware datetimes in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from gateway.audit import JSON, canonical_json
from gateway.model import Direction, EvidenceType, Status
from signing.errors import RogatoryError

Verdict = Mapping[str, JSON]


class StoreError(RogatoryError):
    """A message cannot be recorded or changed as asked; nothing was written."""


class UnknownMessage(StoreError):
    def __init__(self, message_id: str) -> None:
        super().__init__(f"no message {message_id!r} is stored")
        self.message_id = message_id


class MessageIdTaken(StoreError):
    """Another authority's submission already holds this message id."""


class MissingBlob(StoreError):
    """A record names bytes the blob store does not hold: originals are stored first."""


class NotRecipient(StoreError):
    """Only the recipient authority may collect a message."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as sent: status, body and its media type."""

    http_status: int
    body: bytes
    media_type: str


@dataclass(frozen=True)
class AttachmentRecord:
    content_id: str
    media_type: str
    size: int
    sha256: str
    file_name: str | None = None
    verdict: Verdict | None = None


@dataclass(frozen=True)
class EvidenceRecord:
    """A signed evidence: its XML is blob ``sha256``; ``subject_sha256`` is what it speaks of."""

    evidence_id: str
    type: EvidenceType
    issued_at: datetime
    sha256: str
    subject_sha256: str


@dataclass(frozen=True)
class MessageRecord:
    """What intake read from a message's signed envelope."""

    message_id: str
    direction: Direction
    sender_id: str
    recipient_id: str
    kind: str
    envelope_sha256: str
    conversation_id: str | None = None
    request_type: str | None = None
    legal_basis: str | None = None
    verdict: Verdict | None = None
    in_reply_to: str | None = None
    arrived_via: str | None = None
    route: str | None = None


@dataclass(frozen=True)
class Message:
    """A stored message with its current status."""

    message_id: str
    submission_id: str
    direction: Direction
    sender_id: str
    recipient_id: str
    kind: str
    status: Status
    envelope_sha256: str
    conversation_id: str | None
    request_type: str | None
    legal_basis: str | None
    verdict: Verdict | None
    created_at: datetime
    updated_at: datetime
    in_reply_to: str | None = None
    arrived_via: str | None = None  # inbound: the channel it came by (JSON, gateway.routing)
    route: str | None = None  # outbound: the channel chosen for it (JSON, gateway.routing)


@dataclass(frozen=True)
class SubmissionRecord:
    """One submission and the answer intake gives it, to record in one transaction.

    ``message`` is set when the envelope's message id could be read (the
    message is then stored, going from received to ``status``, then through
    ``then`` in order: local delivery is recorded in the same transaction);
    otherwise only the submission and its answer are kept.
    """

    authority_id: str
    envelope_sha256: str
    answer: Answer
    message_id: str | None = None
    message: MessageRecord | None = None
    status: Status = Status.ACCEPTED
    reason: str | None = None
    attachments: tuple[AttachmentRecord, ...] = ()
    evidences: tuple[EvidenceRecord, ...] = ()
    then: tuple[Status, ...] = ()
    then_reason: str | None = None  # why the last step of ``then`` (a failure) happened
    # The id the intake already named in its answer and evidence; fresh when None.
    submission_id: str | None = None
    outbox: OutboxEntry | None = None  # queued for the dispatcher in the same transaction
    notice: OutboxEntry | None = None  # a channel-override notice, queued with it
    # Small blobs (digest -> bytes) written in the same transaction (gateway.small_blobs);
    # every other digest named above must already be in the blob store.
    blobs: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxEntry:
    """Work for the dispatcher: send the message, one of our evidences back, or a notice."""

    channel: str  # gateway.routing.channel_key of the channel to use
    kind: str = "message"  # or "evidence", or "notice" (gateway.notice_sender)
    evidence_id: str | None = None  # the evidence id, or the notice id, the row carries


@dataclass(frozen=True)
class FirstAnswer:
    """The answer given the first time a submission was recorded."""

    submission_id: str
    authority_id: str
    message_id: str | None
    envelope_sha256: str
    answer: Answer
    created_at: datetime


@dataclass(frozen=True)
class SubmissionOutcome:
    """``first`` is the answer to send; ``replayed`` if it was recorded before."""

    first: FirstAnswer
    replayed: bool
    same_envelope: bool

    @property
    def conflicting(self) -> bool:
        """A replayed message id with different content."""
        return self.replayed and not self.same_envelope


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise StoreError("a stored time must carry its time zone")
    return value.astimezone(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite keeps no zone: store UTC, read UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = _aware_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def to_text(value: datetime | None) -> str | None:
            # The text SQLAlchemy's SQLite DATETIME stores ("2026-11-22 10:00:00.000000")
            # in one step: every acceptance stores ten times.
            if value is None:
                return None
            return _aware_utc(value).isoformat(" ", "microseconds")[:-6]  # less "+00:00"

        return to_text

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def verdict_json(verdict: Verdict | None) -> str | None:
    return None if verdict is None else canonical_json(dict(verdict)).decode("utf-8")


def verdict_from(text: str | None) -> Verdict | None:
    if text is None:
        return None
    loaded = json.loads(text)
    assert isinstance(loaded, dict)
    return loaded


_metadata = sa.MetaData()
_when = UTCDateTime()
submissions_table = sa.Table(
    "submissions",
    _metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("authority_id", sa.String(255)),
    sa.Column("message_id", sa.String(255)),
    sa.Column("envelope_sha256", sa.String(64)),
    sa.Column("http_status", sa.SmallInteger),
    sa.Column("response_body", sa.LargeBinary),
    sa.Column("response_type", sa.String(255)),
    sa.Column("created_at", _when),
)
messages_table = sa.Table(
    "messages",
    _metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("submission_id", sa.String(36)),
    sa.Column("direction", sa.String(16)),
    sa.Column("sender_id", sa.String(255)),
    sa.Column("recipient_id", sa.String(255)),
    sa.Column("conversation_id", sa.String(255)),
    sa.Column("kind", sa.String(64)),
    sa.Column("request_type", sa.String(64)),
    sa.Column("legal_basis", sa.Text),
    sa.Column("status", sa.String(32)),
    sa.Column("envelope_sha256", sa.String(64)),
    sa.Column("verdict_json", sa.Text),
    sa.Column("created_at", _when),
    sa.Column("updated_at", _when),
    sa.Column("in_reply_to", sa.String(255)),
    sa.Column("arrived_via", sa.Text),
    sa.Column("route", sa.Text),
)
history_table = sa.Table(
    "status_history",
    _metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(32)),
    sa.Column("at", _when),
    sa.Column("reason", sa.Text),
    sa.Column("audit_index", sa.BigInteger),
)
attachments_table = sa.Table(
    "attachments",
    _metadata,
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("content_id", sa.String(255), primary_key=True),
    sa.Column("file_name", sa.String(255)),
    sa.Column("media_type", sa.String(255)),
    sa.Column("size", sa.BigInteger),
    sa.Column("sha256", sa.String(64)),
    sa.Column("verdict_json", sa.Text),
)
outbox_table = sa.Table(
    "outbox",
    _metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("message_id", sa.String(255)),
    sa.Column("kind", sa.String(16)),
    sa.Column("evidence_id", sa.String(255)),
    sa.Column("channel", sa.Text),
    sa.Column("attempts", sa.Integer),
    sa.Column("next_attempt_at", _when),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_until", _when),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", _when),
)
evidences_table = sa.Table(
    "evidences",
    _metadata,
    sa.Column("evidence_id", sa.String(255), primary_key=True),
    sa.Column("message_id", sa.String(255)),
    sa.Column("type", sa.String(64)),
    sa.Column("issued_at", _when),
    sa.Column("sha256", sa.String(64)),
    sa.Column("subject_sha256", sa.String(64)),
)


def message_from(row: sa.Row[Any]) -> Message:
    return Message(
        message_id=row.message_id,
        submission_id=row.submission_id,
        direction=Direction(row.direction),
        sender_id=row.sender_id,
        recipient_id=row.recipient_id,
        kind=row.kind,
        status=Status(row.status),
        envelope_sha256=row.envelope_sha256,
        conversation_id=row.conversation_id,
        request_type=row.request_type,
        legal_basis=row.legal_basis,
        verdict=verdict_from(row.verdict_json),
        created_at=row.created_at,
        updated_at=row.updated_at,
        in_reply_to=row.in_reply_to,
        arrived_via=row.arrived_via,
        route=row.route,
    )


def first_answer_from(row: Sequence[Any]) -> FirstAnswer:
    """From a row of every ``submissions`` column, in the table's order."""
    submission_id, authority_id, message_id, envelope_sha256, status, body, media, at = row
    return FirstAnswer(
        submission_id=submission_id,
        authority_id=authority_id,
        message_id=message_id,
        envelope_sha256=envelope_sha256,
        answer=Answer(status, bytes(body), media),
        created_at=at,
    )


def attachment_from(row: sa.Row[Any]) -> AttachmentRecord:
    return AttachmentRecord(
        content_id=row.content_id,
        media_type=row.media_type,
        size=int(row.size),
        sha256=row.sha256,
        file_name=row.file_name,
        verdict=verdict_from(row.verdict_json),
    )


def evidence_from(row: sa.Row[Any]) -> EvidenceRecord:
    return EvidenceRecord(
        evidence_id=row.evidence_id,
        type=EvidenceType(row.type),
        issued_at=row.issued_at,
        sha256=row.sha256,
        subject_sha256=row.subject_sha256,
    )
