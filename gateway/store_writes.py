"""Writing the message store: recording a submission, and the building blocks of every write.

A submission's first answer and, with a readable id, its message with its
whole first history go in one transaction (``MessageWriter.record_submission``);
concurrent ones share it (``gateway.group_commit``). ``move_in``,
``insert_evidence(s)`` and ``message_in`` are the building blocks of the later
writes (``gateway.store.MessageStore``, ``gateway.outbox``), always on a
connection from ``db.begin_write()`` and inside ``audit.batch``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gateway.audit import JSON, AuditEvent, AuditLog
from gateway.blobs import BlobStore
from gateway.db import Database
from gateway.driver_sql import DriverStatement
from gateway.group_commit import GroupCommit
from gateway.model import Status, StatusChange, check_transition
from gateway.small_blobs import keep_small
from gateway.store_queries import MessageReader
from gateway.store_records import (
    EvidenceRecord,
    FirstAnswer,
    Message,
    MessageIdTaken,
    MessageRecord,
    MissingBlob,
    OutboxEntry,
    StoreError,
    SubmissionOutcome,
    SubmissionRecord,
    attachments_table,
    evidences_table,
    history_table,
    messages_table,
    outbox_table,
    submissions_table,
    verdict_json,
)


def _now() -> datetime:
    return datetime.now(UTC)


# Run on the driver's cursor (gateway.driver_sql): the hot path of every acceptance.
_INSERT_SUBMISSION = DriverStatement(
    submissions_table.insert(),
    ["id", "authority_id", "message_id", "envelope_sha256", "http_status", "response_body",
     "response_type", "created_at"],
)  # fmt: skip
_INSERT_MESSAGE = DriverStatement(
    messages_table.insert(),
    ["message_id", "submission_id", "direction", "sender_id", "recipient_id", "conversation_id",
     "kind", "request_type", "legal_basis", "status", "envelope_sha256", "verdict_json",
     "created_at", "updated_at", "in_reply_to", "arrived_via", "route"],
)  # fmt: skip
_INSERT_HISTORY = DriverStatement(
    history_table.insert(), ["message_id", "seq", "status", "at", "reason", "audit_index"]
)
_INSERT_ATTACHMENT = DriverStatement(
    attachments_table.insert(),
    ["message_id", "content_id", "file_name", "media_type", "size", "sha256", "verdict_json"],
)
_INSERT_EVIDENCE = DriverStatement(
    evidences_table.insert(),
    ["evidence_id", "message_id", "type", "issued_at", "sha256", "subject_sha256"],
)
_INSERT_OUTBOX = DriverStatement(
    outbox_table.insert(),
    ["id", "message_id", "kind", "evidence_id", "channel", "attempts", "next_attempt_at",
     "created_at"],
)  # fmt: skip
_EXISTS = sa.select(messages_table.c.message_id).where(
    messages_table.c.message_id == sa.bindparam("message_id")
)


class MessageWriter(MessageReader):
    """Records submissions; the writes of ``MessageStore`` and the outbox are built on it."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        audit: AuditLog,
        *,
        gateway_id: str = "rogatory",
        clock: Callable[[], datetime] = _now,
    ) -> None:
        super().__init__(db)
        self.blobs = blobs
        self.audit = audit
        self.gateway_id = gateway_id  # the actor of the gateway's own decisions
        self._clock = clock
        # Concurrent submissions share a transaction and its sync (gateway.group_commit).
        self._submissions = GroupCommit(self._record_submissions, self._record_one_submission)

    def record_submission(self, submission: SubmissionRecord) -> SubmissionOutcome:
        """Store a submission's first answer and, with a readable id, its message; or replay.

        Submissions recorded at the same moment by other threads share the
        transaction and its commit (``gateway.group_commit``); each gets its own outcome.

        If ``(authority_id, message_id)`` was recorded before, nothing is
        stored and the first answer comes back, saying whether the envelope
        was the same. The unique constraints decide, not a read before the
        insert: the intake has looked for a first answer already, so a replay
        here is a race, and the write that lost it is rolled back.
        """
        self._check_submission(submission)
        return self._submissions.write(submission)

    def _record_submissions(
        self, submissions: Sequence[SubmissionRecord]
    ) -> list[SubmissionOutcome]:
        """Several submissions in one transaction (group commit); any error fails them all."""
        with self.db.begin_write() as connection, self.audit.batch(connection):
            return [
                SubmissionOutcome(self._insert_submission(connection, s), False, True)
                for s in submissions
            ]

    def _record_one_submission(self, submission: SubmissionRecord) -> SubmissionOutcome:
        try:
            [outcome] = self._record_submissions([submission])
            return outcome
        except IntegrityError:
            # A unique constraint refused it: a first answer under this id, or the id taken.
            message_id = submission.message_id
            with self.db.begin_read() as connection:
                earlier = self._replay(connection, submission)
                taken = message_id is not None and self._exists(connection, message_id)
            if earlier is not None:
                return earlier
            if submission.message is not None and taken:
                raise MessageIdTaken(f"message id {message_id!r} is already taken") from None
            raise

    def _check_submission(self, submission: SubmissionRecord) -> None:
        message = submission.message
        if message is None:
            if submission.evidences:
                raise StoreError("evidences belong to a message with a readable id")
        else:
            if message.message_id != submission.message_id:
                raise StoreError("the submission and its message name different message ids")
            if message.envelope_sha256 != submission.envelope_sha256:
                raise StoreError("the submission and its message name different envelopes")
            steps = (Status.RECEIVED, submission.status, *submission.then)
            for current, new in itertools.pairwise(steps):
                check_transition(message.direction, current, new)
        digests = [submission.envelope_sha256]
        digests += [a.sha256 for a in submission.attachments]
        digests += [e.sha256 for e in submission.evidences]
        self.require_blobs(digests, staged=submission.blobs)

    def require_blobs(
        self, digests: Iterable[str], *, staged: Mapping[str, bytes] | None = None
    ) -> None:
        """MissingBlob unless the blob store holds every digest: bytes come before records.

        Digests in ``staged`` (small blobs written by the same transaction) need not be there.
        """
        staged = staged or {}
        missing = [
            d for d in dict.fromkeys(digests) if d not in staged and not self.blobs.exists(d)
        ]
        if missing:
            raise MissingBlob(f"the blob store holds no bytes for {', '.join(missing)}")

    def _replay(
        self, connection: Connection, submission: SubmissionRecord
    ) -> SubmissionOutcome | None:
        if submission.message_id is None:
            return None
        first = self._first_answer(connection, submission.authority_id, submission.message_id)
        if first is None:
            return None
        same = first.envelope_sha256 == submission.envelope_sha256
        return SubmissionOutcome(first, replayed=True, same_envelope=same)

    def _insert_submission(
        self, connection: Connection, submission: SubmissionRecord
    ) -> FirstAnswer:
        message = submission.message
        keep_small(connection, submission.blobs)
        now = self._clock()
        first = FirstAnswer(
            submission_id=submission.submission_id or str(uuid.uuid4()),
            authority_id=submission.authority_id,
            message_id=submission.message_id,
            envelope_sha256=submission.envelope_sha256,
            answer=submission.answer,
            created_at=now,
        )
        answer = first.answer
        _INSERT_SUBMISSION.execute(
            connection,
            (first.submission_id, first.authority_id, first.message_id, first.envelope_sha256,
             answer.http_status, answer.body, answer.media_type, now),
        )  # fmt: skip
        if message is None:
            details: dict[str, JSON] = {
                "submission_id": first.submission_id,
                "envelope_sha256": first.envelope_sha256,
                "http_status": first.answer.http_status,
            }
            if submission.reason is not None:
                details["reason"] = submission.reason
            if submission.attachments:
                # Parts refused with no message to hold them: the log names the kept bytes.
                details["parts"] = [
                    {"content_id": a.content_id, "sha256": a.sha256, "size": a.size}
                    for a in submission.attachments
                ]
            event = AuditEvent("submission.refused", submission.authority_id, None, details)
            self.audit.append(event, connection=connection)
        else:
            self._insert_message(connection, submission, message, first)
        return first

    def _insert_message(
        self,
        connection: Connection,
        submission: SubmissionRecord,
        message: MessageRecord,
        first: FirstAnswer,
    ) -> None:
        """A new message with its whole first history, in few statements.

        The row is written once with its final status; each step still gets its
        own audit entry and history row, exactly as ``_move`` would write them.
        """
        now = first.created_at
        received: dict[str, JSON] = {
            "submission_id": first.submission_id,
            "direction": message.direction.value,
            "sender": message.sender_id,
            "recipient": message.recipient_id,
            "kind": message.kind,
            "envelope_sha256": message.envelope_sha256,
            "attachments": [
                {"content_id": a.content_id, "sha256": a.sha256, "size": a.size}
                for a in submission.attachments
            ],
        }
        ref = self.audit.append(
            AuditEvent("message.received", submission.authority_id, message.message_id, received),
            connection=connection,
        )
        history = [self._history_row(message.message_id, 0, Status.RECEIVED, now, None, ref.index)]
        steps = [(submission.status, submission.reason)] + [(s, None) for s in submission.then]
        if submission.then and submission.then_reason is not None:
            steps[-1] = (steps[-1][0], submission.then_reason)
        current, at = Status.RECEIVED, now
        for seq, (status, reason) in enumerate(steps, start=1):
            at = self._clock()
            details: dict[str, JSON] = {"from": current.value, "to": status.value}
            if reason is not None:
                details["reason"] = reason
            ref = self.audit.append(
                AuditEvent(f"message.{status.value}", self.gateway_id, message.message_id, details),
                connection=connection,
            )
            history.append(
                self._history_row(message.message_id, seq, status, at, reason, ref.index)
            )
            current = status
        _INSERT_MESSAGE.execute(
            connection,
            (message.message_id, first.submission_id, message.direction.value, message.sender_id,
             message.recipient_id, message.conversation_id, message.kind, message.request_type,
             message.legal_basis, current.value, message.envelope_sha256,
             verdict_json(message.verdict), now, at, message.in_reply_to, message.arrived_via,
             message.route),
        )  # fmt: skip
        _INSERT_HISTORY.executemany(connection, history)
        if submission.outbox is not None:
            self._enqueue(connection, message.message_id, submission.outbox, now)
        if submission.notice is not None:
            self._enqueue(connection, message.message_id, submission.notice, now)
        if submission.attachments:
            rows = [
                (message.message_id, a.content_id, a.file_name, a.media_type, a.size, a.sha256,
                 verdict_json(a.verdict))
                for a in submission.attachments
            ]  # fmt: skip
            _INSERT_ATTACHMENT.executemany(connection, rows)
        if submission.evidences:
            evidences = submission.evidences
            self.insert_evidences(connection, message.message_id, evidences, self.gateway_id)

    @staticmethod
    def _history_row(
        message_id: str,
        seq: int,
        status: Status,
        at: datetime,
        reason: str | None,
        audit_index: int,
    ) -> tuple[object, ...]:
        """A row of ``_INSERT_HISTORY``."""
        return (message_id, seq, status.value, at, reason, audit_index)

    def insert_evidence(
        self, connection: Connection, message_id: str, evidence: EvidenceRecord, actor: str
    ) -> int:
        """Keep ``evidence`` about a message, audited; returns its audit entry's index."""
        [index] = self.insert_evidences(connection, message_id, [evidence], actor)
        return index

    def insert_evidences(
        self,
        connection: Connection,
        message_id: str,
        evidences: Sequence[EvidenceRecord],
        actor: str,
    ) -> list[int]:
        """Keep evidences about a message in one statement, each audited, in order;
        returns their audit entries' indexes."""
        rows = [
            (e.evidence_id, message_id, e.type.value, e.issued_at, e.sha256, e.subject_sha256)
            for e in evidences
        ]
        _INSERT_EVIDENCE.executemany(connection, rows)
        indexes = []
        for e in evidences:
            details: Mapping[str, JSON] = {
                "evidence_id": e.evidence_id,
                "type": e.type.value,
                "sha256": e.sha256,
                "subject_sha256": e.subject_sha256,
            }
            event = AuditEvent("evidence.issued", actor, message_id, details)
            indexes.append(self.audit.append(event, connection=connection).index)
        return indexes

    @staticmethod
    def _enqueue(
        connection: Connection, message_id: str, entry: OutboxEntry, now: datetime
    ) -> None:
        _INSERT_OUTBOX.execute(
            connection,
            (str(uuid.uuid4()), message_id, entry.kind, entry.evidence_id, entry.channel, 0, now,
             now),
        )  # fmt: skip

    @staticmethod
    def _exists(connection: Connection, message_id: str) -> bool:
        return connection.execute(_EXISTS, {"message_id": message_id}).first() is not None

    def move_in(
        self,
        connection: Connection,
        message: Message,
        new_status: Status,
        reason: str | None,
        actor: str,
    ) -> StatusChange:
        """Move ``message`` (as read in this transaction) to ``new_status``, audited.

        The caller has checked the transition; a row changed meanwhile is a StoreError.
        """
        at = self._clock()
        details: dict[str, JSON] = {"from": message.status.value, "to": new_status.value}
        if reason is not None:
            details["reason"] = reason
        ref = self.audit.append(
            AuditEvent(f"message.{new_status.value}", actor, message.message_id, details),
            connection=connection,
        )
        moved = connection.execute(
            messages_table.update()
            .where(
                messages_table.c.message_id == message.message_id,
                messages_table.c.status == message.status.value,
            )
            .values(status=new_status.value, updated_at=at)
        )
        if moved.rowcount != 1:
            raise StoreError(f"message {message.message_id} changed under this transition")
        seq = connection.execute(
            sa.select(sa.func.count())
            .select_from(history_table)
            .where(history_table.c.message_id == message.message_id)
        ).scalar_one()
        row = self._history_row(message.message_id, int(seq), new_status, at, reason, ref.index)
        _INSERT_HISTORY.execute(connection, row)
        return StatusChange(new_status, at, reason, ref.index)
