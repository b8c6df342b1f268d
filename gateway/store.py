"""The message store: the one place messages are written, each write with its audit entries.

Every write runs in ``Database.begin_write()`` together with the audit
entries that record it, so a message is never visible without its entries
and a crash leaves nothing half-written. Status changes go through
``model.check_transition``: an illegal one raises before anything is written.
The bytes (envelopes, attachments, evidences) live in a ``BlobStore`` and must
be there before a record names them.
"""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa

from gateway.model import EvidenceType, Status, StatusChange, check_transition
from gateway.store_queries import MessageReader
from gateway.store_records import (
    Answer,
    AttachmentRecord,
    EvidenceRecord,
    FirstAnswer,
    Message,
    MessageIdTaken,
    MessageRecord,
    MissingBlob,
    NotRecipient,
    OutboxEntry,
    StoreError,
    SubmissionOutcome,
    SubmissionRecord,
    UnknownMessage,
    evidences_table,
)
from gateway.store_writes import MessageWriter


class MessageStore(MessageWriter):
    """Messages, their first answers, history, attachments and evidences, audited.

    Recording a submission and the building blocks of every write are in
    ``gateway.store_writes``; here are the writes of a message's later life.
    """

    def transition(
        self, message_id: str, new_status: Status, *, reason: str | None = None, actor: str
    ) -> StatusChange:
        """Move a message to ``new_status`` if the lifecycle allows it (else IllegalTransition)."""
        with self.db.begin_write() as connection:
            message = self.message_in(connection, message_id)
            check_transition(message.direction, message.status, new_status)
            return self.move_in(connection, message, new_status, reason, actor)

    def add_evidence(self, message_id: str, evidence: EvidenceRecord, *, actor: str) -> int:
        """Keep an evidence about a stored message; returns its audit entry's index."""
        self.require_blobs([evidence.sha256])
        with self.db.begin_write() as connection:
            self.message_in(connection, message_id)
            return self.insert_evidence(connection, message_id, evidence, actor)

    def record_peer_evidence(
        self,
        message_id: str,
        evidence: EvidenceRecord,
        statuses: tuple[Status, ...],
        *,
        actor: str,
    ) -> bool:
        """Keep a peer's evidence and move the message on; False if it was kept before."""
        self.require_blobs([evidence.sha256])
        with self.db.begin_write() as connection, self.audit.batch(connection):
            message = self.message_in(connection, message_id)
            known = connection.execute(
                sa.select(evidences_table.c.message_id).where(
                    evidences_table.c.evidence_id == evidence.evidence_id
                )
            ).first()
            if known is not None:
                if known.message_id != message_id:
                    raise StoreError(f"evidence id {evidence.evidence_id} is already taken")
                return False
            self.insert_evidence(connection, message_id, evidence, actor)
            for status in statuses:
                check_transition(message.direction, message.status, status)
                self.move_in(
                    connection, message, status, f"{evidence.type.value} from {actor}", actor
                )
                message = replace(message, status=status)
            return True

    def record_retrieval(
        self,
        message_id: str,
        authority_id: str,
        evidence: EvidenceRecord,
        *,
        send_back: str | None = None,
    ) -> StatusChange:
        """The recipient collected it: delivered -> retrieved, with a Retrieval evidence."""
        if evidence.type is not EvidenceType.RETRIEVAL:
            raise StoreError(f"a retrieval is proven by a Retrieval evidence, not {evidence.type}")
        self.require_blobs([evidence.sha256])
        with self.db.begin_write() as connection, self.audit.batch(connection):
            message = self.message_in(connection, message_id)
            if message.recipient_id != authority_id:
                raise NotRecipient(f"{authority_id} is not the recipient of {message_id}")
            check_transition(message.direction, message.status, Status.RETRIEVED)
            change = self.move_in(connection, message, Status.RETRIEVED, None, authority_id)
            self.insert_evidence(connection, message_id, evidence, self.gateway_id)
            if send_back is not None:  # the sender's gateway hears of it by the same channel
                entry = OutboxEntry(send_back, "evidence", evidence.evidence_id)
                self._enqueue(connection, message_id, entry, change.at)
            return change


# The records travel with the store: one import for its callers.
__all__ = [
    "Answer",
    "AttachmentRecord",
    "EvidenceRecord",
    "FirstAnswer",
    "Message",
    "MessageIdTaken",
    "MessageReader",
    "MessageRecord",
    "MessageStore",
    "MissingBlob",
    "NotRecipient",
    "StoreError",
    "SubmissionOutcome",
    "SubmissionRecord",
    "UnknownMessage",
]
